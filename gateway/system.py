"""Health, readiness, Prometheus metrics and the OpenAPI document."""
from __future__ import annotations

import re
import shutil

from flask import Blueprint, Response, current_app, request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import GaugeMetricFamily

from .auth import require
from .openapi import document
from .problems import Problem
from .storage import StorageError

bp = Blueprint("system", __name__)
HOST = re.compile(r"([A-Za-z0-9-]{1,63}\.)*[A-Za-z0-9-]{1,63}(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]{2,45}\](:[0-9]{1,5})?")


class StateCollector:
    """Gauges read from the store at scrape time."""

    def __init__(self, store, settings):
        self.store, self.settings = store, settings

    def collect(self):
        queue = GaugeMetricFamily("heygem_queue_depth", "Items waiting to render")
        queue.add_metric([], self.store.queued_items())
        jobs = GaugeMetricFamily("heygem_jobs", "Jobs by status", labels=["status"])
        for status, count in self.store.counts_by_status().items():
            jobs.add_metric([status], count)
        disk = GaugeMetricFamily("heygem_disk_free_bytes", "Free space under the data directory")
        disk.add_metric([], shutil.disk_usage(self.settings.data_dir).free)
        yield from (queue, jobs, disk)


@bp.get("/healthz")
def healthz():
    return {"status": "ok"}


@bp.get("/readyz")
def readyz():
    settings = current_app.config["SETTINGS"]
    current_app.extensions["store"].queued_items()  # the database answers
    free_mb = shutil.disk_usage(settings.data_dir).free / 2**20
    if free_mb < settings.min_free_mb:
        raise Problem(503, f"low on disk space ({free_mb:.0f} MB free)")
    try:
        current_app.extensions["storage"].check()
    except StorageError as exc:
        raise Problem(503, str(exc))
    workers = current_app.extensions["workers"]
    if workers.dispatcher:
        # Items render in worker processes. Redis away does not make the gateway unready: jobs
        # are taken into the database and sent when it is back.
        dispatcher = workers.dispatcher
        return {"status": "ready", "queue": {"name": "celery", "queue": settings.render_queue,
                                             "dispatching": dispatcher.leading,
                                             "broker_reachable": dispatcher.broker_reachable}}
    if not any(t.is_alive() for t in workers.threads if t.name.startswith("worker-")) and settings.workers > 0:
        raise Problem(503, "no worker thread is running")
    # A remote engine that is down does not make the gateway unready: jobs are taken and wait for it.
    engine = current_app.extensions["engine"]
    health = engine.health()
    return {"status": "ready", "engine": {
        "name": engine.name, "url": engine.url or None, "reachable": health.reachable, "detail": health.detail,
        "slots": settings.workers, "in_flight": engine.metrics.in_flight}}


@bp.get("/metrics")
@require("metrics:read")
def metrics():
    return Response(generate_latest(current_app.extensions["registry"]), mimetype=CONTENT_TYPE_LATEST)


@bp.get("/openapi.yaml")
def openapi():
    shape = request.args.get("for")
    if shape not in (None, "dify"):
        raise Problem(400, "'for' may only be dify (the document to import into Dify as a custom tool)")
    settings = current_app.config["SETTINGS"]
    # The request's host when it is a plain host[:port] (HEYGEM_PUBLIC_URL, when set, wins).
    server = settings.public_url or (request.host_url if HOST.fullmatch(request.host)
                                     else current_app.extensions["links"].listening)
    return Response(document(server, for_dify=shape == "dify"), mimetype="application/yaml")
