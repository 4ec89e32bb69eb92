"""heygem-gateway: the HTTP service that queues lip-sync jobs and serves their videos."""
from __future__ import annotations

import json
import logging
import os
import time
from logging.handlers import RotatingFileHandler

from flask import Flask, g, request
from prometheus_client import CollectorRegistry

from . import engines
from . import storage as storages
from .callbacks import Deliverer
from .config import Settings
from .database import url_from
from .housekeeping import Housekeeping
from .jobs import Waiters
from .links import Links
from .publisher import Publisher
from .shared import SharedFiles
from .store import Store
from .system import StateCollector
from .templates import AnalysisSlots
from .urlpolicy import UrlPolicy
from .worker import WorkerPool


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any `extra` fields."""

    RESERVED = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": self.formatTime(record), "level": record.levelname, "logger": record.name,
                 "message": record.getMessage()}
        entry.update({k: v for k, v in record.__dict__.items() if k not in self.RESERVED})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def _configure_logging(settings: Settings) -> None:
    """The service's log and the WSGI server's (its own errors) as JSON lines, to stderr and a file."""
    root = logging.getLogger("heygem")
    if getattr(root, "_heygem_configured", None) == settings.log_file:
        return
    formatter = JsonFormatter()
    handlers = [logging.StreamHandler(), RotatingFileHandler(settings.log_file, maxBytes=10 * 2**20, backupCount=5)]
    for handler in handlers:
        handler.setFormatter(formatter)
    for logger in (root, logging.getLogger("waitress")):
        logger.handlers[:] = handlers
        logger.setLevel(logging.INFO)
        logger.propagate = False
    root._heygem_configured = settings.log_file


def create_app(settings: Settings | None = None, start_workers: bool = True) -> Flask:
    settings = settings or Settings.from_env()
    for folder in (settings.data_dir, settings.outputs_dir):
        os.makedirs(folder, exist_ok=True)
    _configure_logging(settings)
    app = Flask(__name__)
    app.config["SETTINGS"] = settings
    app.json.sort_keys = False
    store = Store(url_from(settings))
    registry = CollectorRegistry()
    registry.register(StateCollector(store, settings))
    policy = UrlPolicy(settings.allowed_hosts, settings.max_url_length, settings.ca_bundle)
    storage = storages.from_settings(settings)
    links = Links(settings, storage)
    publisher = Publisher(settings, store, storage)
    deliverer = Deliverer(settings, store, policy, links)
    store.on_delivery = deliverer.wake  # a job ended: its callback goes out now, not at the next poll
    shared = SharedFiles(settings, storage)
    housekeeping = Housekeeping(settings, store, storage, publisher, shared)
    engine = engines.from_settings(settings, policy, links, registry, shared)
    dispatcher = None
    if settings.queue == "celery":
        from .dispatch import Dispatcher
        from .tasks import celery_app
        dispatcher = Dispatcher(settings, store, celery_app(settings))
    workers = WorkerPool(settings, store, registry, policy, engine, housekeeping, publisher, deliverer, shared,
                         dispatcher)
    app.extensions.update(store=store, registry=registry, workers=workers, urlpolicy=policy, storage=storage, engine=engine,
                          shared=shared,
                          housekeeping=housekeeping, links=links, deliverer=deliverer,
                          waiters=Waiters(settings.max_waiters),
                          analyses=AnalysisSlots(settings.max_analyses))

    from . import downloads, easy, edge, jobs, problems, system, templates, ui
    problems.register(app)
    for blueprint in (jobs.bp, templates.bp, downloads.bp, system.bp, ui.bp, easy.bp):
        app.register_blueprint(blueprint)
    access = logging.getLogger("heygem.access")

    @app.before_request
    def _clock() -> None:
        g.started = time.perf_counter()

    edge.install(app)

    @app.after_request
    def _log_request(response):
        principal = g.get("principal")
        access.info("request", extra={"event": "request", "method": request.method, "path": request.path,
                                      "status": response.status_code, "tenant": principal.tenant if principal else None,
                                      "ms": round((time.perf_counter() - g.get("started", time.perf_counter())) * 1000, 1)})
        return response

    if start_workers:
        workers.start()
    return app
