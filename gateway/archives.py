"""A finished job's ZIP: its videos (stored, not deflated: MP4s do not compress) and a manifest
that lists every item, failed ones too. Made once when the job's last item is done, into the
job's folder, then stored like the videos (kept there, or uploaded to the bucket)."""
from __future__ import annotations

import json
import os
import threading
import zipfile

from . import paths
from .store import ITEM_DONE, SUCCEEDED, Job, outcome

_locks_lock = threading.Lock()
_locks: dict[str, threading.Lock] = {}  # one per job being built: other jobs' ZIPs do not wait


class Unfinished(Exception):
    """The job still runs; its ZIP is made when it ends."""


class Gone(Exception):
    """The job was deleted while its ZIP was being made."""


def _on_disk(item, path: str) -> bool:
    return os.path.isfile(path)


def archive(settings, job: Job, local_copy=_on_disk) -> str:
    """The path of the job's ZIP, made now if it was not yet. `local_copy(item, path)`: whether
    the item's video is at `path` (a publisher fetches it there from object storage)."""
    if any(item.status not in ITEM_DONE for item in job.items):
        raise Unfinished(job.id)
    path = paths.archive(settings, job.tenant, job.id)
    if os.path.exists(path):
        return path
    with _locks_lock:
        lock = _locks.setdefault(job.id, threading.Lock())
    try:
        with lock:
            if not os.path.exists(path):
                _build(settings, job, path, local_copy)
    except FileNotFoundError as exc:  # its folder went with the job
        raise Gone(job.id) from exc
    finally:
        with _locks_lock:
            _locks.pop(job.id, None)
    return path


def _build(settings, job: Job, path: str, local_copy) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)  # a job whose every item failed has no folder yet
    status = outcome([item.status for item in job.items], job.cancel_requested)
    manifest = {"job": job.id, "status": status, "metadata": job.metadata, "items": []}
    partial = path + ".part"
    try:
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_STORED) as bundle:
            for item in job.items:
                video = paths.output(settings, job.tenant, job.id, item.index)
                entry = {"index": item.index, "template": item.template, "status": item.status,
                         "error": item.error, "file": None}
                if item.status == SUCCEEDED and local_copy(item, video):
                    entry["file"] = os.path.basename(video)  # output_001.mp4: never a caller's name
                    bundle.write(video, entry["file"])
                manifest["items"].append(entry)
            bundle.writestr("manifest.json", json.dumps(manifest, indent=2))
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
