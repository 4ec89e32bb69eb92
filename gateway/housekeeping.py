"""Housekeeping: jobs past the retention period, and files nothing needs any more (narrations of
finished, refused or deleted jobs, a finished job's downloads, what a crash left behind)."""
from __future__ import annotations

import logging
import os
import shutil
import time

from . import paths, uploads
from .store import Job, Store

log = logging.getLogger("heygem.housekeeping")
# An upload is saved before its job is written: younger ones may still be on their way.
UPLOAD_GRACE_SECONDS = 900.0


def _names(folder: str) -> list[str]:
    try:
        return [name for name in os.listdir(folder) if paths.NAME.fullmatch(name)]
    except FileNotFoundError:
        return []


class Housekeeping:
    def __init__(self, settings, store: Store, storage, publisher, shared):
        self.settings, self.store, self.storage, self.publisher, self.shared = settings, store, storage, publisher, shared

    def delete_job(self, job: Job) -> None:
        """Forget a job and remove its files: its videos, its downloads, its uploaded narration.
        Its objects in the bucket are remembered in the store and removed by the publisher
        (retried while the store is unreachable)."""
        self.store.delete_job(job.id, has_objects=self.storage.remote)
        if self.storage.remote:
            self.publisher.wake()
        for folder in (lambda: paths.job_outputs(self.settings, job.tenant, job.id),
                       lambda: paths.work_dir(self.settings, job.id)):
            try:
                shutil.rmtree(folder(), ignore_errors=True)
            except ValueError:  # a name from before names were checked: nothing safe to remove
                log.warning("job files not removed", extra={"event": "housekeeping", "job": job.id})
        if job.audio_upload:
            uploads.remove(self.settings, self.shared, job.audio_upload)

    def startup(self) -> None:
        """Before the workers start: what a crash or kill left half-made."""
        settings, known = self.settings, self.store.template_ids()
        for tenant in _names(paths.data(settings, "templates")):
            for template_id in _names(paths.data(settings, "templates", tenant)):
                if template_id not in known:  # the process died while analysing it
                    shutil.rmtree(paths.template_dir(settings, tenant, template_id), ignore_errors=True)
                    log.info("removed an unfinished template", extra={"event": "housekeeping", "template": template_id})
        for root, _, files in os.walk(settings.outputs_dir):
            for name in files:
                if name.endswith(".part"):  # a render cut off mid-file; its item runs again
                    os.remove(os.path.join(root, name))
        self.sweep()

    def sweep(self) -> int:
        """Remove expired jobs and files no unfinished job needs; returns how many jobs expired."""
        settings, store = self.settings, self.store
        expired = store.expired_jobs(time.time() - settings.retention_days * 86400)
        for job_id, _ in expired:
            job = store.job(job_id)
            if job:
                self.delete_job(job)
        # Listed before the store is asked: a folder made after the listing is not judged on
        # an answer from before its job existed.
        upload_ids, work_ids = _names(paths.data(settings, "uploads")), _names(paths.data(settings, "work"))
        live, unfinished = store.live_uploads(), store.unfinished_job_ids()
        for upload_id in upload_ids:
            try:
                age = time.time() - os.path.getmtime(paths.upload(settings, upload_id))
            except FileNotFoundError:
                continue
            if upload_id not in live and age > UPLOAD_GRACE_SECONDS:
                uploads.remove(settings, self.shared, upload_id)
        for job_id in work_ids:
            if job_id not in unfinished:
                shutil.rmtree(paths.work_dir(settings, job_id), ignore_errors=True)
        if expired:
            log.info("retention sweep", extra={"event": "sweep", "jobs": len(expired)})
        return len(expired)
