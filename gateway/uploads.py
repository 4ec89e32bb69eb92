"""Narrations uploaded with a job, kept under uploads/<id> while the job needs them. Only a
multipart upload makes one; a job names it by the id made here, never by anything a client sent."""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import uuid
from dataclasses import dataclass

from werkzeug.datastructures import FileStorage
from werkzeug.utils import secure_filename

from . import paths
from .problems import Problem
from .storage import StorageError

log = logging.getLogger("heygem.uploads")


@dataclass(frozen=True)
class Upload:
    id: str
    path: str
    name: str      # the client's file name, made safe: what messages call it
    sha256: str


def save(settings, upload: FileStorage, default_name: str) -> Upload:
    upload_id = uuid.uuid4().hex
    path = paths.upload(settings, upload_id)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    upload.save(path)
    size = os.path.getsize(path)
    if not 0 < size <= settings.max_upload_mb * 2**20:
        os.remove(path)
        if size == 0:
            raise Problem(400, f"the {default_name} file is empty")
        raise Problem(413, f"the {default_name} is over the {settings.max_upload_mb} MB limit")
    with open(path, "rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
    return Upload(upload_id, path, secure_filename(upload.filename or "") or default_name, digest)


def remove(settings, shared, upload_id: str) -> None:
    """The upload, here and (when workers render elsewhere) in object storage."""
    try:
        path = paths.upload(settings, upload_id)
    except ValueError:
        return
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)
    shared.remove(path)


def share(shared, path: str) -> None:
    """Make a file sent with a request readable by the workers (HEYGEM_QUEUE=celery); 503 when
    object storage cannot take it."""
    try:
        shared.publish(path)
    except StorageError as exc:
        log.warning("could not share an upload", extra={"event": "storage", "error": str(exc)})
        raise Problem(503, "object storage is unreachable; try again shortly", {"Retry-After": "30"}) from exc
