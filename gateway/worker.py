"""Background work: worker threads take queued items from the store, fetch what they need and
run the engine into the outputs directory (or, with HEYGEM_QUEUE=celery, a dispatcher sends the
items to `heygem worker` processes, which do the same: tasks.py); a watcher hands finished files
found there (ours, or an external engine's that writes into the same directory) to the
publisher; the publisher stores them, the deliverer sends callbacks, housekeeping runs
periodically. One pool starts and stops all of these threads."""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import threading
import time

from prometheus_client import Histogram
from sqlalchemy.exc import DBAPIError

from . import paths
from .engines import Canceled, Engine, EngineFailed, RenderTask
from .fetch import FetchLimits, fetch
from .problems import fault_id
from .shared import SharedFiles
from .storage import StorageError
from .store import CANCELED, FAILED, QUEUED, RUNNING, SUCCEEDED, TEMPLATE_ID_PREFIX, Item, Job, Store
from .urlpolicy import OutboundError, UrlPolicy

log = logging.getLogger("heygem.worker")
SWEEP_INTERVAL = 600.0


def item_seconds(registry) -> Histogram:
    return Histogram("heygem_item_seconds", "Time to render one item", ["status"],
                     buckets=(5, 15, 30, 60, 120, 300, 600, 1800, 3600), registry=registry)


LOST = "lost"  # a run's end when its claim was taken away (its worker was silent too long)


class LeaseLost(Exception):
    """The item was taken away from this worker (silent too long) and runs elsewhere now."""


class Interrupted(Exception):
    """The service is stopping: the item stays running, and is run again at the next start."""


class ItemRunner:
    """Renders one claimed item: fetches its narration and template, runs the engine into the
    outputs folder, and reports progress to the store, where it also hears of a cancel. The
    worker threads use it, and so does a Celery worker's task."""

    def __init__(self, settings, store: Store, policy: UrlPolicy, engine: Engine, shared: SharedFiles,
                 stop: threading.Event):
        self.settings, self.store, self.policy, self.engine, self.shared = settings, store, policy, engine, shared
        self.stop = stop

    def _fetch(self, job: Job, url: str, path: str) -> str:
        if os.path.exists(path):  # an earlier item of the job downloaded it
            return path
        os.makedirs(os.path.dirname(path), exist_ok=True)

        def keep_going() -> None:
            if self.store.cancel_requested(job.id):
                raise Canceled()
        return fetch(self.policy, url, path, FetchLimits.from_settings(self.settings), keep_going)

    def _narration_file(self, job: Job) -> str:
        if job.audio_upload:  # sent with the job, already on disk (or in object storage)
            path = paths.upload(self.settings, job.audio_upload)
            if not self.shared.fetch(path):
                raise OutboundError(f"{job.audio_name}: the uploaded narration is no longer on the server; "
                                    "submit the job again")
            return path
        return self._fetch(job, job.audio_url, paths.work_file(self.settings, job.id, "narration"))

    def _template(self, job: Job, item: Item) -> tuple[str, str]:
        """(path, what to call it) of the item's template."""
        if item.template.startswith(TEMPLATE_ID_PREFIX):
            template = self.store.template(item.template, job.tenant)
            path = template and paths.template_file(self.settings, job.tenant, template.id, "source")
            if template is None or not self.shared.fetch(path):
                raise OutboundError(f"template {item.template!r} has been deleted")
            return path, f"{template.name} ({template.id})"
        digest = hashlib.sha256(item.template.encode()).hexdigest()[:16]
        path = paths.work_file(self.settings, job.id, f"template-{digest}")
        return self._fetch(job, item.template, path), item.template

    def run(self, item: Item) -> str:
        """Render `item` (claimed, under its lease); its status afterwards: SUCCEEDED when its
        video is rendered and waits to be stored, RUNNING when interrupted by a shutdown."""
        store, settings = self.store, self.settings
        job = store.job(item.job_id)
        if job is None:
            return CANCELED
        fields = {"event": "item", "job": job.id, "tenant": job.tenant, "item": item.index}
        names: dict[str, str] = {}
        last: list = [0.0, ""]
        output = paths.output(settings, job.tenant, job.id, item.index)
        if os.path.isfile(output):  # rendered before a restart (outputs appear whole): store it, do not render again
            return SUCCEEDED if store.rendered(item, output) else LOST

        def report(stage: str, done: int, total: int) -> None:
            """Progress to the store (at most every HEYGEM_PROGRESS_SECONDS, and at a new stage
            or the end); a canceled job stops the item here."""
            if self.stop.is_set():
                raise Interrupted()
            now = time.monotonic()
            if now - last[0] >= settings.progress_seconds or stage != last[1] or (total and done == total):
                last[:] = [now, stage]
                try:
                    if store.cancel_requested(job.id):
                        raise Canceled()
                    if not store.progress(item, stage, done, total):
                        raise LeaseLost()
                except DBAPIError as exc:  # the database is away a moment: render on, report later
                    log.warning("progress not written", extra={**fields, "error": str(exc).splitlines()[0]})

        try:
            store.progress(item, "downloading narration")
            narration = self._narration_file(job)
            names[narration] = job.audio_name
            store.progress(item, "downloading template")
            template, template_name = self._template(job, item)
            names[template] = template_name
            if store.cancel_requested(job.id):
                raise Canceled()
            with self.engine.metrics.rendering():
                self.engine.render(RenderTask(job.id, item.index, narration, template, output, names,
                                              paths.work_dir(settings, job.id), report))
        except Interrupted:
            log.info("item interrupted by shutdown", extra={**fields, "status": RUNNING})
            return RUNNING
        except LeaseLost:
            log.warning("item taken away from this worker; it runs elsewhere", extra={**fields, "status": LOST})
            return LOST
        except Canceled:
            store.finish_item(item, CANCELED, error="canceled while rendering")
            log.info("item canceled", extra={**fields, "status": CANCELED})
            return CANCELED
        except (EngineFailed, OutboundError) as exc:
            error = str(exc)
            store.finish_item(item, FAILED, error=error)
            log.info("item failed", extra={**fields, "status": FAILED, "error": error})
            return FAILED
        except StorageError as exc:
            log.warning("item's inputs unreadable", extra={**fields, "status": FAILED, "error": str(exc)})
            store.finish_item(item, FAILED, error="its inputs could not be read from object storage (the reason is "
                                                  "in the service's log); submit the job again")
            return FAILED
        except Exception:  # a fault: the item fails with it, the worker carries on
            error_id = fault_id()
            log.exception("item fault", extra={**fields, "status": FAILED, "error_id": error_id})
            store.finish_item(item, FAILED, error=f"internal error (error id {error_id}); it is logged")
            return FAILED
        return SUCCEEDED if store.rendered(item, output) else LOST

    def clean_up(self, item: Item) -> None:
        """The job's downloads, once it needs them no more (and a worker's copy of its uploaded
        narration: the original is in object storage)."""
        job = self.store.job(item.job_id)
        if job is None or job.status not in (QUEUED, RUNNING):
            shutil.rmtree(paths.work_dir(self.settings, item.job_id), ignore_errors=True)
            if job is not None and job.audio_upload and self.shared.active:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(paths.upload(self.settings, job.audio_upload))


class WorkerPool:
    """The gateway's background threads. With HEYGEM_QUEUE=threads: `workers` render threads and
    the outputs watcher; with celery: the dispatcher that sends items to the workers' queue.
    Either way: the publisher, the callback deliverer and housekeeping."""

    def __init__(self, settings, store: Store, registry, policy: UrlPolicy, engine: Engine, housekeeping, publisher,
                 deliverer, shared: SharedFiles, dispatcher=None):
        self.settings, self.store = settings, store
        self.housekeeping, self.publisher, self.deliverer, self.dispatcher = housekeeping, publisher, deliverer, dispatcher
        self.wake = threading.Event()
        self.stop = threading.Event()
        self.runner = ItemRunner(settings, store, policy, engine, shared, self.stop)
        self.threads: list[threading.Thread] = []
        self.item_seconds = item_seconds(registry)

    def start(self) -> None:
        loops = [(lambda: self._every(SWEEP_INTERVAL, self.housekeeping.sweep), "housekeeping"),
                 (lambda: self.publisher.run(self.stop), "publisher"),
                 (lambda: self.deliverer.run(self.stop), "deliverer")]
        if self.dispatcher:  # items render in worker processes; this process only sends them
            loops.append((lambda: self.dispatcher.run(self.stop, self.wake), "dispatcher"))
        else:
            requeued = self.store.requeue_interrupted()
            if requeued:
                log.info("requeued interrupted items", extra={"event": "requeue", "items": requeued})
            loops += [(self._run, f"worker-{i}") for i in range(self.settings.workers)]
            loops.append((lambda: self._every(1.0, self.watch_once), "watcher"))
        self.housekeeping.startup()
        for target, name in loops:
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self.threads.append(thread)

    def shutdown(self, timeout: float = 5.0) -> None:
        self.stop.set()
        for event in (self.wake, self.publisher.wakeup, self.deliverer.wakeup):
            event.set()
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
            status = self.runner.run(item)
            self.item_seconds.labels(status).observe(time.monotonic() - started)
            if status == SUCCEEDED:
                self.publisher.wake()
            self.runner.clean_up(item)

    def watch_once(self) -> int:
        """Hand over finished outputs that appeared for unfinished items; how many."""
        found = 0
        for job in self.store.unfinished_jobs():
            for item in job.items:
                if item.status in (QUEUED, RUNNING):
                    path = paths.output(self.settings, job.tenant, job.id, item.index)
                    if os.path.isfile(path) and self.store.rendered(item, path):
                        found += 1
        if found:
            self.publisher.wake()
        return found

    def _every(self, seconds: float, task) -> None:
        """Run `task` every `seconds` until shutdown; a failure is logged and the next run tries again."""
        while not self.stop.wait(seconds):
            try:
                task()
            except Exception:  # noqa: BLE001 - logged; the next run tries again
                log.exception("%s failed", task.__name__)
