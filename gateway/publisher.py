"""The publish step: a rendered video (an item in `storing`) is put where its link will point, a
finished job's ZIP is made and stored, and a deleted job's objects are removed.

With local storage a video is published at once. With S3, an upload that fails is retried with
backoff for HEYGEM_STORAGE_RETRY_HOURS, then its item fails; the local file is removed only once
the store has confirmed the object (HEYGEM_S3_KEEP_LOCAL keeps it). The durable state is the
store's (`storing` items, `pending` ZIPs, object removals): after a restart, the work resumes."""
from __future__ import annotations

import logging
import os
import shutil
import threading
import time

from . import backoff, paths
from .archives import Gone, archive
from .storage import VIDEO_TYPE, ZIP_TYPE, StorageError
from .store import Item, Job, Store

log = logging.getLogger("heygem.publisher")


class Publisher:
    def __init__(self, settings, store: Store, storage):
        self.settings, self.store, self.storage = settings, store, storage
        self.wakeup = threading.Event()
        # What failed and when to try it again: {what: (failures, next attempt, first failure)}.
        # In memory: after a restart everything pending is tried at once.
        self.failures: dict[tuple, tuple[int, float, float]] = {}

    def wake(self) -> None:
        self.wakeup.set()

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.publish_once()
            except Exception:  # noqa: BLE001 - logged; the next round tries again
                log.exception("publish round failed")
            self.wakeup.wait(1.0)
            self.wakeup.clear()

    def publish_once(self) -> None:
        for item in self.store.storing_items():
            self._video(item)
        for job in self.store.archiving_jobs():
            self._archive(job)
        for tenant, job_id in self.store.object_removals():
            self._remove(tenant, job_id)

    # steps --------------------------------------------------------------------------------------

    def _video(self, item: Item) -> None:
        job = self.store.job(item.job_id)
        what = ("video", item.job_id, item.index)
        if job is None or not self._due(what):
            return
        path = paths.output(self.settings, job.tenant, job.id, item.index)
        key = self.storage.key(job.tenant, job.id, os.path.basename(path))
        try:
            self.storage.put(key, path, VIDEO_TYPE)
        except (StorageError, OSError) as exc:
            if self._failed(what, exc, job):
                self.store.fail_storing(item, f"the video could not be stored: {exc}")
            return
        self.failures.pop(what, None)
        self.store.stored(item, key)
        if self.storage.remote and not self.settings.s3_keep_local and not job.zip:
            os.remove(path)  # confirmed in the bucket (a job with zip keeps it for its ZIP)
        log.info("item succeeded", extra={"event": "item", "job": job.id, "tenant": job.tenant, "item": item.index,
                                          "status": "succeeded", "object": key,
                                          "store_seconds": round(time.time() - (item.rendered or time.time()), 3)})

    def _archive(self, job: Job) -> None:
        what = ("archive", job.id)
        if not self._due(what):
            return
        try:
            path = archive(self.settings, job)
            key = self.storage.key(job.tenant, job.id, os.path.basename(path))
            self.storage.put(key, path, ZIP_TYPE)
        except Gone:
            return
        except (StorageError, OSError) as exc:
            if self._failed(what, exc, job):
                self.store.archive_done(job.id, None, f"the ZIP could not be stored: {exc}")
            return
        self.failures.pop(what, None)
        self.store.archive_done(job.id, key)
        if self.storage.remote and not self.settings.s3_keep_local:
            shutil.rmtree(paths.job_outputs(self.settings, job.tenant, job.id), ignore_errors=True)
        log.info("archive stored", extra={"event": "archive", "job": job.id, "tenant": job.tenant, "object": key})

    def _remove(self, tenant: str, job_id: str) -> None:
        what = ("remove", tenant, job_id)
        if not self._due(what):
            return
        try:
            self.storage.remove_job(tenant, job_id)
        except StorageError as exc:
            self._failed(what, exc, None)  # a deleted job's objects: tried until they are gone
            return
        self.failures.pop(what, None)
        self.store.object_removed(tenant, job_id)

    # retries ------------------------------------------------------------------------------------

    def _due(self, what: tuple) -> bool:
        failure = self.failures.get(what)
        return failure is None or time.monotonic() >= failure[1]

    def _failed(self, what: tuple, exc: Exception, job: Job | None) -> bool:
        """Count a failure and schedule the next attempt; True when it is time to give up."""
        count, _, first = self.failures.get(what, (0, 0.0, time.monotonic()))
        count += 1
        give_up = job is not None and time.monotonic() - first >= self.settings.storage_retry_hours * 3600
        wait = backoff.delay(count, 2.0, self.settings.storage_backoff_max_seconds)
        self.failures[what] = (count, time.monotonic() + wait, first)
        fields = {"event": "storage", "what": "/".join(map(str, what)), "attempt": count, "error": str(exc)}
        if job is not None:
            fields.update(job=job.id, tenant=job.tenant)
        log.warning("giving up storing" if give_up else "storing failed; will retry", extra=fields)
        if give_up:
            self.failures.pop(what, None)
        return give_up
