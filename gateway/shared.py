"""Files one machine writes and another reads when items render elsewhere (HEYGEM_QUEUE=celery):
uploaded narrations, kept templates and their thumbnails. Each is put in object storage under
<prefix>/_shared/<its path under the data folder> when written, and fetched into the same path
on a machine that lacks it (which then keeps it, as a cache). With the default queue every file
is on this machine's disk and nothing is copied."""
from __future__ import annotations

import contextlib
import os
import threading

from .storage import StorageError

CONTENT_TYPE = "application/octet-stream"


class SharedFiles:
    def __init__(self, settings, storage):
        self.settings, self.storage = settings, storage
        self.active = settings.queue == "celery"
        self.locks: dict[str, threading.Lock] = {}  # one per file being fetched
        self.locks_lock = threading.Lock()

    def _key(self, path: str) -> str:
        relative = os.path.relpath(path, self.settings.data_dir)
        if relative.startswith(".."):
            raise ValueError(f"{path} is not under the data folder")
        # '.shared' cannot be a tenant's folder (no tenant name starts with a dot).
        return "/".join(filter(None, (self.settings.s3_prefix, ".shared", *relative.split(os.sep))))

    def publish(self, path: str) -> None:
        """`path` (under the data folder) is to be readable on every machine."""
        if self.active:
            self.storage.put(self._key(path), path, CONTENT_TYPE)

    def fetch(self, path: str) -> bool:
        """Whether `path` is on this machine's disk, fetched now if it is shared and was not
        (StorageError: the object store could not be read, so it is not known)."""
        if os.path.exists(path) or not self.active:
            return os.path.exists(path)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with self.locks_lock:  # items of one job fetch its narration at once: one download
            lock = self.locks.setdefault(path, threading.Lock())
        try:
            with lock:
                if os.path.exists(path):
                    return True
                self.storage.get(self._key(path), path)
                return True
        except FileNotFoundError:
            return False
        finally:
            with self.locks_lock:
                self.locks.pop(path, None)

    def remove(self, path: str) -> None:
        if self.active:
            with contextlib.suppress(StorageError):
                self.storage.remove(self._key(path))
