"""Background rendering: worker threads take queued items from the store, fetch what they need
and run the engine into the outputs directory; a watcher publishes finished files found there
(ours, or an external engine's that writes into the same directory); a housekeeping thread
removes expired jobs."""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import threading
import time
from collections import OrderedDict

from prometheus_client import Histogram

import engine
from engine import EngineError
from engine.pipeline import output_name

from .fetch import FetchError, fetch
from .store import CANCELED, FAILED, ITEM_DONE, SUCCEEDED, TEMPLATE_ID_PREFIX, UPLOAD_PREFIX, Item, Job, Store

log = logging.getLogger("heygem.worker")
PROGRESS_INTERVAL = 0.5  # seconds between progress writes


class Canceled(Exception):
    pass


def job_dir(settings, job: Job) -> str:
    return os.path.join(settings.outputs_dir, job.tenant, job.id)


def work_dir(settings, job_id: str) -> str:
    return os.path.join(settings.data_dir, "work", job_id)


class WorkerPool:
    def __init__(self, settings, store: Store, registry):
        self.settings, self.store = settings, store
        self.wake = threading.Event()
        self.stop = threading.Event()
        self.audio: OrderedDict[str, engine.AudioTrack] = OrderedDict()  # a few jobs' analysed narrations
        self.audio_lock = threading.Lock()
        self.threads: list[threading.Thread] = []
        # Called with (job, item, path) once per finished video: where uploads to object storage
        # and result callbacks plug in.
        self.publishers: list = []
        self.publish_lock = threading.Lock()
        self.item_seconds = Histogram("heygem_item_seconds", "Time to render one item", ["status"],
                                      buckets=(5, 15, 30, 60, 120, 300, 600, 1800, 3600), registry=registry)

    def start(self) -> None:
        requeued = self.store.requeue_interrupted()
        if requeued:
            log.info("requeued interrupted items", extra={"event": "requeue", "items": requeued})
        loops = [(self._run, f"worker-{i}") for i in range(self.settings.workers)]
        loops += [(lambda: self._every(1.0, self.watch_once), "watcher"), (lambda: self._every(600, self.sweep), "retention")]
        for target, name in loops:
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self.threads.append(thread)

    def shutdown(self, timeout: float = 5.0) -> None:
        self.stop.set()
        self.wake.set()
        for thread in self.threads:
            thread.join(timeout)

    def notify(self) -> None:
        self.wake.set()

    def _run(self) -> None:
        while not self.stop.is_set():
            item = self.store.claim_item()
            if item is None:
                self.wake.wait(1.0)
                self.wake.clear()
                continue
            started = time.monotonic()
            status = self._process(item)
            self.item_seconds.labels(status).observe(time.monotonic() - started)

    def _narration(self, job: Job) -> engine.AudioTrack:
        with self.audio_lock:
            if job.id in self.audio:
                self.audio.move_to_end(job.id)
                return self.audio[job.id]
        folder = work_dir(self.settings, job.id)
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, "narration")
        if job.audio_url.startswith(UPLOAD_PREFIX):  # sent with the job, already on disk
            path = os.path.join(self.settings.data_dir, "uploads", job.audio_url[len(UPLOAD_PREFIX):])
        elif not os.path.exists(path):
            self._fetch(job.audio_url, path)
        track = engine.analyse_audio(path)
        with self.audio_lock:
            self.audio[job.id] = track
            while len(self.audio) > 4:
                self.audio.popitem(last=False)
        return track

    def _fetch(self, url: str, path: str) -> str:
        settings = self.settings
        return fetch(url, path, settings.allowed_hosts, settings.max_download_mb * 2**20, settings.download_timeout)

    def _template(self, job: Job, item: Item) -> str:
        if item.template.startswith(TEMPLATE_ID_PREFIX):
            template = self.store.template(item.template, job.tenant)
            if template is None or not os.path.exists(template.path):
                raise FetchError(f"template {item.template!r} has been deleted")
            return template.path
        digest = hashlib.sha256(item.template.encode()).hexdigest()[:16]
        path = os.path.join(work_dir(self.settings, job.id), f"template-{digest}")
        return path if os.path.exists(path) else self._fetch(item.template, path)

    def _process(self, item: Item) -> str:
        store = self.store
        job = store.job(item.job_id)
        if job is None:
            return CANCELED
        fields = {"event": "item", "job": job.id, "tenant": job.tenant, "item": item.index}
        output = os.path.join(job_dir(self.settings, job), output_name(item.index))
        last = [0.0]

        def progress(done: int, total: int) -> None:
            now = time.monotonic()
            if now - last[0] >= PROGRESS_INTERVAL or done == total:
                last[0] = now
                if store.cancel_requested(job.id):
                    raise Canceled()
                store.progress(item, "rendering", done, total)

        try:
            store.progress(item, "downloading narration")
            audio = self._narration(job)
            store.progress(item, "downloading template")
            template = self._template(job, item)
            if store.cancel_requested(job.id):
                raise Canceled()
            store.progress(item, "analysing face")
            engine.render(audio, template, output, on_progress=progress,
                          cache_dir=os.path.join(self.settings.data_dir, "template-cache"))
        except Canceled:
            store.finish_item(item, CANCELED, error="canceled while rendering")
            log.info("item canceled", extra={**fields, "status": CANCELED})
            return CANCELED
        except (EngineError, FetchError) as exc:
            store.finish_item(item, FAILED, error=str(exc))
            log.info("item failed", extra={**fields, "status": FAILED, "error": str(exc)})
            return FAILED
        except Exception as exc:  # a fault: the item fails with it, the worker carries on
            log.exception("item fault", extra={**fields, "status": FAILED})
            store.finish_item(item, FAILED, error=f"internal error: {exc.__class__.__name__}: {exc}")
            return FAILED
        self.publish(job, item, output)
        return SUCCEEDED

    def publish(self, job: Job, item: Item, path: str) -> None:
        """A finished video: run the publishers, then mark the item succeeded (once)."""
        with self.publish_lock:
            current = self.store.job(job.id)
            if current is None or current.items[item.index].status == SUCCEEDED:
                return
            for publisher in self.publishers:
                publisher(job, item, path)
            self.store.finish_item(item, SUCCEEDED, output=path)
        log.info("item succeeded", extra={"event": "item", "job": job.id, "tenant": job.tenant,
                                          "item": item.index, "status": SUCCEEDED, "output": path})

    def watch_once(self) -> int:
        """Publish finished outputs that appeared for unfinished items; how many."""
        found = 0
        for job in self.store.unfinished_jobs():
            folder = job_dir(self.settings, job)
            for item in job.items:
                path = os.path.join(folder, output_name(item.index))
                if item.status not in ITEM_DONE and os.path.isfile(path):
                    self.publish(job, item, path)
                    found += 1
        return found

    def _every(self, seconds: float, task) -> None:
        """Run `task` every `seconds` until shutdown; a failure is logged and the next run tries again."""
        while not self.stop.wait(seconds):
            try:
                task()
            except Exception:  # noqa: BLE001 - logged; the next run tries again
                log.exception("%s failed", task.__name__)

    def remove_job_files(self, job_id: str, tenant: str) -> None:
        shutil.rmtree(os.path.join(self.settings.outputs_dir, tenant, job_id), ignore_errors=True)
        shutil.rmtree(work_dir(self.settings, job_id), ignore_errors=True)
        with self.audio_lock:
            self.audio.pop(job_id, None)

    def sweep(self) -> int:
        """Remove jobs (records and files) older than the retention period."""
        expired = self.store.expired_jobs(time.time() - self.settings.retention_days * 86400)
        for job_id, tenant in expired:
            self.store.delete_job(job_id)
            self.remove_job_files(job_id, tenant)
        if expired:
            log.info("retention sweep", extra={"event": "sweep", "jobs": len(expired)})
        return len(expired)
