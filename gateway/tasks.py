"""Celery on Redis (HEYGEM_QUEUE=celery): the task that renders one item, and `heygem worker`, the
process that runs it on any machine.

A task names an item, nothing more; the database is the truth. A task delivered twice (Redis
re-sends what a dead worker had not acknowledged, the gateway re-sends what Redis lost) renders
once: the item is claimed only if it is queued, or if its worker has been silent for
HEYGEM_WORKER_LOST_SECONDS. Tasks are acknowledged once they ran (acks_late), one at a time
(prefetch 1); a task that meets the database away goes back to Redis after a pause instead. A
worker stopped with SIGTERM gives its items (rendering or uploading) back to the queue at once."""
from __future__ import annotations

import logging
import threading
import time
from urllib.parse import urlsplit

from celery import Celery, signals
from celery.exceptions import Reject
from prometheus_client import CollectorRegistry, start_http_server
from sqlalchemy.exc import DBAPIError

from . import engines
from . import storage as storages
from .database import url_from
from .links import Links
from .publisher import Publisher
from .shared import SharedFiles
from .store import SUCCEEDED, WORKER_NAME, Store
from .urlpolicy import UrlPolicy
from .worker import ItemRunner, item_seconds

log = logging.getLogger("heygem.tasks")
RENDER = "heygem.render"
DATABASE_RETRY_SECONDS = 5.0


def celery_app(settings) -> Celery:
    app = Celery("heygem", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        task_acks_late=True, worker_prefetch_multiplier=1, task_reject_on_worker_lost=True,
        # Longer than the longest item: Redis gives an unacknowledged task to another worker after it.
        broker_transport_options={"visibility_timeout": settings.visibility_timeout},
        broker_connection_retry_on_startup=True, broker_connection_max_retries=None,
        task_serializer="json", accept_content=["json"], task_ignore_result=True,
        worker_hijack_root_logger=False, worker_send_task_events=False, task_default_queue=settings.render_queue)
    return app


class Heartbeat:
    """Tells the store, every HEYGEM_HEARTBEAT_SECONDS, that this process still holds its leases."""

    def __init__(self, store: Store, seconds: float, stop: threading.Event):
        self.store, self.seconds, self.stop = store, seconds, stop
        self.leases: set[str] = set()
        self.lock = threading.Lock()

    def hold(self, lease: str) -> None:
        with self.lock:
            self.leases.add(lease)

    def release(self, lease: str) -> None:
        with self.lock:
            self.leases.discard(lease)

    def run(self) -> None:
        while not self.stop.wait(self.seconds):
            with self.lock:
                leases = sorted(self.leases)
            try:
                self.store.heartbeat(leases)
            except Exception:  # noqa: BLE001 - the database is away; the next beat tries again
                log.exception("heartbeat failed")


class RenderWorker:
    """What one `heygem worker` process holds: the store, object storage, its engine."""

    def __init__(self, settings):
        self.settings = settings
        self.stop = threading.Event()
        self.store = Store(url_from(settings))
        self.registry = CollectorRegistry()
        storage = storages.from_settings(settings)
        policy = UrlPolicy(settings.allowed_hosts, settings.max_url_length, settings.ca_bundle)
        shared = SharedFiles(settings, storage)
        engine = engines.from_settings(settings, policy, Links(settings, storage), self.registry, shared)
        self.runner = ItemRunner(settings, self.store, policy, engine, shared, self.stop)
        self.publisher = Publisher(settings, self.store, storage)
        self.heartbeat = Heartbeat(self.store, settings.heartbeat_seconds, self.stop)
        self.item_seconds = item_seconds(self.registry)

    def render(self, job_id: str, index: int) -> str:
        try:
            return self._render(job_id, index)
        except DBAPIError as exc:
            # The database is away: the task goes back to Redis (not acknowledged as done), after
            # a pause so that a worker does not spin through the queue meanwhile.
            log.warning("database unreachable; task returned to the queue",
                        extra={"event": "item", "job": job_id, "item": index, "error": str(exc).splitlines()[0]})
            self.stop.wait(DATABASE_RETRY_SECONDS)
            raise Reject(str(exc).splitlines()[0], requeue=True) from exc

    def _render(self, job_id: str, index: int) -> str:
        item = self.store.claim(job_id, index, self.settings.worker_lost_seconds)
        if item is None:  # done, canceled, or running elsewhere: a repeated delivery
            log.info("task skipped: its item is not waiting", extra={"event": "item", "job": job_id, "item": index})
            return "skipped"
        self.heartbeat.hold(item.lease)
        started = time.monotonic()
        try:
            status = self.runner.run(item)
            self.item_seconds.labels(status).observe(time.monotonic() - started)
            if status == SUCCEEDED:
                self.publisher.store_video(item, self.stop)
            if self.stop.is_set():  # our shutdown, mid-render or mid-upload: another worker takes it now
                self.store.release(item)
            self.runner.clean_up(item)
            return status
        finally:
            self.heartbeat.release(item.lease)


def run_worker(settings) -> int:
    """`heygem worker`: consume this engine's queue until SIGTERM/SIGINT."""
    worker = RenderWorker(settings)
    app = celery_app(settings)
    app.task(name=RENDER, acks_late=True, reject_on_worker_lost=True)(worker.render)
    threading.Thread(target=worker.heartbeat.run, name="heartbeat", daemon=True).start()
    # A warm shutdown waits for running tasks: they stop at their next progress report instead.
    signals.worker_shutting_down.connect(lambda **_: worker.stop.set(), weak=False)
    if settings.metrics_listen:
        host, _, port = settings.metrics_listen.rpartition(":")
        start_http_server(int(port), host.strip("[]") or "127.0.0.1", registry=worker.registry)
    print(f"heygem worker: queue {settings.render_queue}, {settings.workers} at once, broker "
          f"{_without_password(settings.broker_url)}", flush=True)
    app.Worker(hostname=f"heygem-{WORKER_NAME}", pool="threads", concurrency=settings.workers,
               queues=[settings.render_queue], loglevel="INFO", without_gossip=True, without_mingle=True,
               without_heartbeat=True).start()
    return 0


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"
