"""The publish step: a rendered video (an item in `storing`) is put where its link will point, a
finished job's ZIP is made and stored, and a deleted job's objects are removed.

With local storage a video is published at once. With S3, an upload that fails is retried with
backoff for HEYGEM_STORAGE_RETRY_HOURS, then its item fails; the local file is removed only once
the store has confirmed the object (HEYGEM_S3_KEEP_LOCAL keeps it). The durable state is the
store's (`storing` items, `pending` ZIPs, object removals): after a restart, the work resumes."""
from __future__ import annotations

import contextlib
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
        # What failed and when to try it again: {what: (failures, next attempt)}. In memory:
        # after a restart everything pending is tried at once; the give-up window is measured
        # from durable times (when the video was rendered, when the job's last item ended).
        self.failures: dict[tuple, tuple[int, float]] = {}

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
        # With HEYGEM_QUEUE=celery a video is on the disk of the worker that rendered it, which
        # stores it itself (store_video).
        steps = [(self._video, item) for item in self.store.storing_items()] if self.settings.queue == "threads" else []
        steps += [(self._archive, job) for job in self.store.archiving_jobs()]
        steps += [(self._remove, removal) for removal in self.store.object_removals()]
        for step, subject in steps:
            try:
                step(subject)
            except Exception:  # noqa: BLE001 - one bad step does not hold back the others
                log.exception("publish step failed", extra={"event": "storage", "step": step.__name__})

    def store_video(self, item: Item, stop: threading.Event) -> None:
        """Store one video just rendered here, now: retried with backoff until it is stored,
        given up on, or this process stops (then it is rendered again elsewhere)."""
        what = ("video", item.job_id, item.index)
        while not stop.is_set():
            self._video(item)
            if what not in self.failures:
                return
            stop.wait(max(0.0, self.failures[what][1] - time.monotonic()))

    # steps --------------------------------------------------------------------------------------

    def _video(self, item: Item) -> None:
        job = self.store.job(item.job_id)
        what = ("video", item.job_id, item.index)
        if job is None or not self._due(what):
            return
        path = paths.output(self.settings, job.tenant, job.id, item.index)
        if not os.path.isfile(path):  # nothing to retry
            self.store.fail_storing(item, "the rendered video is gone from the server's disk; submit the job again")
            return
        key = self.storage.key(job.tenant, job.id, os.path.basename(path))
        try:
            self.storage.put(key, path, VIDEO_TYPE)
        except (StorageError, OSError) as exc:
            if self._failed(what, exc, job, since=item.rendered):
                self.store.fail_storing(item, "the video could not be put in object storage (the reason is in the "
                                              "service's log); submit the job again")
            return
        self.failures.pop(what, None)
        self.store.stored(item, key)
        self.wake()  # its job's ZIP may be due now: the next round starts at once
        if self._deleted_meanwhile(job):
            return
        # Confirmed in the bucket; a job with zip keeps it for its ZIP (made here, unless workers
        # render: then the ZIP is made from the bucket).
        if self.storage.remote and not self.settings.s3_keep_local and (not job.zip or self.settings.queue == "celery"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
        log.info("item succeeded", extra={"event": "item", "job": job.id, "tenant": job.tenant, "item": item.index,
                                          "status": "succeeded", "object": key,
                                          "store_seconds": round(time.time() - (item.rendered or time.time()), 3)})

    def _archive(self, job: Job) -> None:
        what = ("archive", job.id)
        if not self._due(what):
            return
        try:
            path = archive(self.settings, job, self._local_copy)
            key = self.storage.key(job.tenant, job.id, os.path.basename(path))
            self.storage.put(key, path, ZIP_TYPE)
        except Gone:
            return
        except (StorageError, OSError) as exc:
            if self._failed(what, exc, job, since=max((item.finished or 0) for item in job.items)):
                self.store.archive_done(job.id, None, "the ZIP could not be put in object storage (the reason is in "
                                                      "the service's log); the videos' links work")
            return
        self.failures.pop(what, None)
        self.store.archive_done(job.id, key)
        if self._deleted_meanwhile(job):
            return
        if self.storage.remote and not self.settings.s3_keep_local:
            shutil.rmtree(paths.job_outputs(self.settings, job.tenant, job.id), ignore_errors=True)
        log.info("archive stored", extra={"event": "archive", "job": job.id, "tenant": job.tenant, "object": key})

    def _local_copy(self, item: Item, path: str) -> bool:
        """Whether the item's video is at `path`, fetched from the bucket if it was stored there
        (by a worker on another machine). StorageError when the bucket cannot be read."""
        if os.path.isfile(path) or not (self.storage.remote and item.object_key):
            return os.path.isfile(path)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        try:
            self.storage.get(item.object_key, path)
        except FileNotFoundError:
            return False
        return True

    def _remove(self, removal: tuple[str, str]) -> None:
        tenant, job_id = removal
        what = ("remove", tenant, job_id)
        if not self._due(what):
            return
        try:
            self.storage.remove_job(tenant, job_id)
        except StorageError as exc:
            self._failed(what, exc, None, since=None)  # a deleted job's objects: tried until they are gone
            return
        self.failures.pop(what, None)
        self.store.object_removed(tenant, job_id)

    def _deleted_meanwhile(self, job: Job) -> bool:
        """A job deleted while its upload ran: what was just uploaded is removed too."""
        if self.store.job(job.id) is not None:
            return False
        if self.storage.remote:
            self.store.remember_object_removal(job.tenant, job.id)
            self.wake()
        return True

    # retries ------------------------------------------------------------------------------------

    def _due(self, what: tuple) -> bool:
        failure = self.failures.get(what)
        return failure is None or time.monotonic() >= failure[1]

    def _failed(self, what: tuple, exc: Exception, job: Job | None, since: float | None) -> bool:
        """Count a failure and schedule the next attempt; True when it is time to give up (the
        work has failed since `since` for longer than the retry window)."""
        count = self.failures.get(what, (0, 0.0))[0] + 1
        give_up = since is not None and time.time() - since >= self.settings.storage_retry_hours * 3600
        wait = backoff.delay(count, 2.0, self.settings.storage_backoff_max_seconds)
        self.failures[what] = (count, time.monotonic() + wait)
        fields = {"event": "storage", "what": "/".join(map(str, what)), "attempt": count, "error": str(exc)}
        if job is not None:
            fields.update(job=job.id, tenant=job.tenant)
        log.warning("giving up storing" if give_up else "storing failed; will retry", extra=fields)
        if give_up:
            self.failures.pop(what, None)
        return give_up
