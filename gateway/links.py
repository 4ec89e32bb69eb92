"""The links results are reached by. Stored in a bucket: the bucket's (presigned or public) URLs.
Kept locally: signed, expiring /download links that name one thing by id (a job's video, a job's
ZIP, a template's thumbnail), never a path: the file is found from the store when the link is
used, so a link can reach nothing else, whoever holds the key.

Links are made in requests (based on the request's host unless HEYGEM_PUBLIC_URL is set) and in
callbacks, outside any request (HEYGEM_PUBLIC_URL, else the address the service listens on)."""
from __future__ import annotations

import secrets
import threading
import time

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from .problems import Problem
from .store import ARCHIVE_FAILED, JOB_DONE, SUCCEEDED, Item, Job

VIDEO, ARCHIVE, THUMBNAIL = "video", "archive", "thumbnail"


class Links:
    def __init__(self, settings, storage):
        self.serializer = URLSafeTimedSerializer(settings.link_secret, salt="heygem-download-v2")
        self.settings, self.storage = settings, storage
        self.public_url = settings.public_url.rstrip("/")
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        self.listening = f"http://{host}:{settings.port}"
        # Inputs handed to a remote engine by URL: random id -> (file, expiry). The id is the
        # credential (the engine sends no token); it names one file, for a short while.
        self.inputs: dict[str, tuple[str, float]] = {}
        self.inputs_lock = threading.Lock()

    def engine_input(self, path: str, name: str, ttl: float) -> str:
        """A link to one local file for a remote engine to fetch, valid `ttl` seconds."""
        ident = secrets.token_urlsafe(24)
        now = time.monotonic()
        with self.inputs_lock:
            self.inputs = {k: v for k, v in self.inputs.items() if v[1] > now}
            self.inputs[ident] = (path, now + ttl)
        return f"{self.public_url or self.listening}/engine-inputs/{ident}/{name}"

    def engine_input_file(self, ident: str) -> str | None:
        with self.inputs_lock:
            path, expires = self.inputs.get(ident, ("", 0.0))
        return path if expires > time.monotonic() else None

    def download(self, kind: str, *ids, base: str | None = None) -> str:
        """A /download link to a job's video (job id, item index), a job's ZIP (job id) or a
        template's thumbnail (template id)."""
        root = self.public_url or (base or self.listening).rstrip("/")
        return f"{root}/download/{self.serializer.dumps([kind, *ids])}"

    def read(self, token: str) -> tuple[str, list]:
        """(kind, ids) named by a /download link; Problem 404 (forged) or 410 (expired)."""
        try:
            named = self.serializer.loads(token, max_age=self.settings.link_ttl)
        except SignatureExpired:
            raise Problem(410, "this download link has expired; fetch the job again for a fresh one")
        except BadSignature:
            raise Problem(404, "no such download")
        if not isinstance(named, list) or not named or named[0] not in (VIDEO, ARCHIVE, THUMBNAIL):
            raise Problem(404, "no such download")
        return named[0], named[1:]

    def video(self, job: Job, item: Item, base: str | None = None) -> str | None:
        if item.status != SUCCEEDED:
            return None
        if item.object_key:
            return self.storage.url(item.object_key)
        return self.download(VIDEO, job.id, item.index, base=base)

    def archive(self, job: Job, base: str | None = None) -> str | None:
        """The finished job's ZIP, when it asked for one and has a video to put in it."""
        if not job.zip or job.status not in JOB_DONE or job.archive_state == ARCHIVE_FAILED:
            return None
        if job.archive_key:
            return self.storage.url(job.archive_key)
        if any(item.status == SUCCEEDED for item in job.items):
            return self.download(ARCHIVE, job.id, base=base)
        return None
