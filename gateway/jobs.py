"""/api/v1/jobs: submit, follow, list, cancel and delete lip-sync jobs."""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import threading
import time

from flask import Blueprint, current_app, g, request, url_for

from . import paths, uploads
from .auth import require
from .edge import accepts_uploads
from .problems import Problem
from .store import (ARCHIVE_PENDING, ITEM_DONE, JOB_DONE, JOB_STATUSES, PENDING, QUEUED, RUNNING, STORING,
                    TEMPLATE_ID_PREFIX, Conflict, Job)
from .callbacks import TOLERANCE_SECONDS, summary
from .urlpolicy import RefusedURL

bp = Blueprint("jobs", __name__, url_prefix="/api/v1")
MAX_WAIT = 55.0
IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,200}")
SURROGATE = re.compile("[\ud800-\udfff]")


def _ext(name: str):
    return current_app.extensions[name]


def _settings():
    return current_app.config["SETTINGS"]


def _delivery_document(job: Job) -> dict | None:
    """The job's latest callback delivery."""
    latest = _ext("store").latest_delivery(job.id) if job.callback_url else None
    if latest is None:
        return None
    return {"url": latest.url, "delivery_id": latest.id, "event": latest.event, "status": latest.status,
            "attempts": latest.attempts, "last_attempt_at": latest.last_attempt, "last_status_code": latest.last_status,
            "last_error": latest.last_error, "next_attempt_at": latest.next_attempt if latest.status == PENDING else None,
            "delivered_at": latest.delivered}


def _archive_bytes(job: Job) -> int | None:
    """The ZIP's size when it is kept here (the console warns before a large download)."""
    if not job.zip or job.status in (QUEUED, RUNNING):
        return None
    try:
        return os.path.getsize(paths.archive(_settings(), job.tenant, job.id))
    except (OSError, ValueError):
        return None


def job_document(job: Job) -> dict:
    store, results = _ext("store"), _ext("links")
    base = request.host_url
    done = sum(1 for item in job.items if item.status in ITEM_DONE)
    running = [item for item in job.items if item.status == RUNNING]
    # Progress counts finished items plus the running items' share of frames.
    share = sum(item.frames_done / item.frames_total for item in running if item.frames_total)
    finished = job.status not in (QUEUED, RUNNING)
    items = []
    for item in job.items:
        # `storing` (uploading to the bucket) is a stage of running, to the API.
        entry = {"index": item.index, "template": item.template,
                 "status": RUNNING if item.status == STORING else item.status, "stage": item.stage,
                 "error": item.error, "frames_done": item.frames_done, "frames_total": item.frames_total,
                 "video_url": results.video(job, item, base)}
        items.append(entry)
    if finished:
        stage = "finished"
    elif running or any(item.status == STORING for item in job.items):
        stage = next((item.stage for item in job.items if item.status in (RUNNING, STORING) and item.stage), "running")
    elif job.archive_state == ARCHIVE_PENDING:
        stage = "storing the ZIP"
    else:
        stage = "queued"
    document = {
        "id": job.id, "status": job.status, "created_at": job.created, "started_at": job.started,
        "finished_at": job.finished, "metadata": job.metadata,
        "progress": {"items_done": done, "items_total": len(job.items),
                     "percent": round(100.0 * (done + share) / len(job.items), 1), "stage": stage},
        "queue_position": store.queue_position(job) if job.status == QUEUED else None,
        "items": items,
        "video_urls": [entry["video_url"] for entry in items if entry["video_url"]],
        "archive_url": results.archive(job, base),
        "archive_error": job.archive_error,
        "archive_bytes": _archive_bytes(job),
        "text": None,
        "callback": _delivery_document(job),
    }
    document["text"] = summary(job, document["video_urls"], document["archive_url"], document["progress"]["percent"])
    return document


def _inspect(value) -> tuple[int, str | None]:
    """(how deeply a parsed JSON value nests, what is wrong in it). Iterative: no recursion limit
    to hit. Wrong: strings with unpaired surrogates (not Unicode text; they cannot be stored),
    numbers too large for a float (parsed as infinity)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            deepest = max(deepest, depth)
            stack.extend((key, depth) for key in value)
            stack.extend((child, depth + 1) for child in value.values())
        elif isinstance(value, list):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in value)
        elif isinstance(value, str) and SURROGATE.search(value):
            return deepest, "a string holds an unpaired surrogate (\\ud800-\\udfff); send valid Unicode"
        elif isinstance(value, float) and not math.isfinite(value):
            return deepest, "a number is too large"
    return deepest, None


def _no_constants(name: str):
    raise ValueError(f"{name} is not a JSON number")


def parse_json(text: str | bytes, what: str):
    """`text` parsed as strict JSON (no NaN or Infinity), within the depth limit; Problem 400
    naming `what` otherwise."""
    settings = _settings()
    try:
        value = json.loads(text, parse_constant=_no_constants)
    except (ValueError, RecursionError) as exc:
        reason = str(exc) if "JSON number" in str(exc) else "not valid JSON, or nested too deeply"
        raise Problem(400, f"{what}: {reason}")
    depth, wrong = _inspect(value)
    if depth > settings.max_json_depth:
        raise Problem(400, f"{what}: the JSON nests over {settings.max_json_depth} levels deep")
    if wrong:
        raise Problem(400, f"{what}: {wrong}")
    return value


def json_body() -> dict:
    """The request's JSON object; Problem 400 for anything else."""
    body = parse_json(request.get_data(cache=True) or b"null", "the request body")
    if not isinstance(body, dict):
        raise Problem(400, "send a JSON object")
    return body


def _check_url(url: str, field: str) -> None:
    try:
        _ext("urlpolicy").check(url)
    except RefusedURL as exc:
        raise Problem(400, f"'{field}': {exc}")


def _validated(body: dict, audio_key: str, templates_key: str, uploaded: bool) -> dict:
    settings = _settings()
    audio_url = body.get(audio_key)
    templates = body.get(templates_key)
    if uploaded:
        if audio_url is not None:
            raise Problem(400, f"send the narration as the 'audio' file or as '{audio_key}', not both")
    elif not isinstance(audio_url, str) or not audio_url:
        raise Problem(400, f"'{audio_key}' is required: the URL of the narration audio")
    if isinstance(templates, str):  # one, or several separated by spaces or new lines (as Dify's tool sends them)
        templates = [t.rstrip(",;") for t in templates.split()] or [""]
    if not isinstance(templates, list) or not templates or not all(isinstance(t, str) and t for t in templates):
        raise Problem(400, f"'{templates_key}' is required: a list of 1 to {settings.max_templates} template video URLs")
    if len(templates) > settings.max_templates:
        raise Problem(400, f"'{templates_key}' lists {len(templates)} templates; at most {settings.max_templates} per job")
    callback_url = body.get("callback_url")
    if callback_url is not None and not isinstance(callback_url, str):
        raise Problem(400, "'callback_url' must be a URL string")
    metadata = body.get("metadata")
    if isinstance(metadata, str):  # JSON text (Dify's tools send objects as text)
        metadata = parse_json(metadata, "'metadata'") if metadata.strip() else None
    if metadata is not None and not isinstance(metadata, dict):
        raise Problem(400, "'metadata' must be a JSON object")
    if metadata is not None and len(json.dumps(metadata)) > settings.max_metadata_kb * 1024:
        raise Problem(400, f"'metadata' is over {settings.max_metadata_kb} KB as JSON; keep ids there, not content")
    wait = body.get("wait_seconds", 0)
    if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not 0 <= wait <= MAX_WAIT:
        raise Problem(400, f"'wait_seconds' must be a number from 0 to {MAX_WAIT:g}")
    zip_ = body.get("zip", False)
    if not isinstance(zip_, bool):
        raise Problem(400, "'zip' must be true or false")
    if not uploaded:
        _check_url(audio_url, audio_key)
    store, tenant = _ext("store"), g.principal.tenant
    for template in dict.fromkeys(templates):
        if template.startswith(TEMPLATE_ID_PREFIX):
            known = store.template(template, tenant)
            if known is None:
                raise Problem(400, f"no template {template[:100]!r}; upload it with POST /api/v1/templates or give a URL")
            if known.status != "ready":
                raise Problem(400, f"template {template!r} was rejected: {known.reason}")
        else:
            _check_url(template, templates_key)
    if callback_url:
        _check_url(callback_url, "callback_url")
    return {"audio_url": audio_url or "", "templates": templates, "callback_url": callback_url,
            "metadata": metadata, "zip": zip_, "wait_seconds": float(wait)}


def _form_body(templates_key: str) -> dict:
    """A multipart submission's fields (the narration is the `audio` file, saved separately)."""
    body: dict = {templates_key: request.form.getlist(templates_key)}
    for key in ("callback_url", "wait_seconds", "zip", "metadata"):
        value = request.form.get(key)
        if value is None:
            continue
        if key == "callback_url":
            body[key] = value
        else:
            body[key] = parse_json(value, f"'{key}' (a number, true/false or an object, as JSON)")
    return body


class Waiters:
    """Requests that wait for their job (wait_seconds) hold a server thread; beyond `limit` at
    once, a submit answers at once (202) so that threads stay free for everyone else."""

    def __init__(self, limit: int):
        self.slots = threading.BoundedSemaphore(max(limit, 1)) if limit > 0 else None

    def wait(self, store, job: Job, seconds: float) -> Job:
        if seconds <= 0 or self.slots is None or not self.slots.acquire(blocking=False):
            return job
        try:
            deadline = time.monotonic() + seconds
            while job.status in (QUEUED, RUNNING) and time.monotonic() < deadline:
                time.sleep(0.25)
                job = store.job(job.id) or job
            return job
        finally:
            self.slots.release()


def enqueue(fields: dict, key: str | None, upload=None) -> tuple[Job, bool]:
    """(job, created) for validated `fields`, within the disk and queue limits; a known
    idempotency `key` with the same fields returns its job."""
    settings, store = _settings(), _ext("store")
    free_mb = shutil.disk_usage(settings.data_dir).free / 2**20
    if free_mb < settings.min_free_mb:
        raise Problem(503, f"the server is low on disk space ({free_mb:.0f} MB free); try again later")
    if store.queued_items() + len(fields["templates"]) > settings.queue_limit:
        raise Problem(429, "the queue is full; try again in a minute", {"Retry-After": "60"})
    waiting = store.queued_items(g.principal.tenant)
    if waiting + len(fields["templates"]) > settings.tenant_queue_limit:
        raise Problem(429, f"{waiting} of your templates are waiting already (at most {settings.tenant_queue_limit}); "
                      "submit more when some are done", {"Retry-After": "60"})
    # An uploaded narration counts by its content, not by where it was kept.
    hashed = {k: v for k, v in fields.items() if k != "wait_seconds"}
    if upload:
        hashed["audio_url"] = "sha256:" + upload.sha256
    request_hash = hashlib.sha256(json.dumps(hashed, sort_keys=True).encode()).hexdigest()
    try:
        return store.create_job(
            g.principal.tenant, fields["audio_url"], upload.id if upload else None,
            upload.name if upload else fields["audio_url"], fields["templates"], fields["callback_url"],
            fields["metadata"], fields["zip"], key, request_hash)
    except Conflict:
        raise Problem(409, "this Idempotency-Key was already used with a different request body")


def _submit(audio_key: str, templates_key: str):
    settings, store = _settings(), _ext("store")
    key = request.headers.get("Idempotency-Key")
    if key is not None and not IDEMPOTENCY_KEY.fullmatch(key):
        raise Problem(400, "'Idempotency-Key' must be 1-200 visible ASCII characters")
    upload = None
    if request.mimetype == "multipart/form-data":
        if request.files.get("audio") is None:
            raise Problem(400, "a multipart job needs the narration as an 'audio' file (or send JSON with 'audio_url')")
        upload = uploads.save(settings, request.files["audio"], "narration")
    created = False
    try:
        if upload:
            uploads.share(_ext("shared"), upload.path)
        body = _form_body(templates_key) if upload else json_body()
        fields = _validated(body, audio_key, templates_key, uploaded=upload is not None)
        job, created = enqueue(fields, key, upload)
    finally:
        if upload and not created:  # refused, or a retry of a job that has its own copy
            uploads.remove(settings, _ext("shared"), upload.id)
    _ext("workers").notify()
    job = _ext("waiters").wait(store, job, fields["wait_seconds"])
    finished = job.status not in (QUEUED, RUNNING)
    return job_document(job), 200 if finished else 202, {"Location": url_for("jobs.get_job", job_id=job.id)}


@bp.post("/jobs")
@require("jobs:write")
@accepts_uploads
def create_job():
    return _submit("audio_url", "templates")


@bp.post("/generate-batch")
@require("jobs:write")
@accepts_uploads
def generate_batch():
    """The request HeyGem integrations already send."""
    return _submit("audio_url", "video_templates")


def _own_job(job_id: str) -> Job:
    job = _ext("store").job(job_id, tenant=g.principal.tenant)
    if job is None:  # another tenant's job is indistinguishable from none
        raise Problem(404, f"no job {job_id[:100]!r}")
    return job


@bp.get("/jobs/<job_id>")
@require("jobs:read")
def get_job(job_id: str):
    return job_document(_own_job(job_id))


@bp.get("/jobs")
@require("jobs:read")
def list_jobs():
    status = request.args.get("status")
    if status is not None and status not in JOB_STATUSES:
        raise Problem(400, f"'status' must be one of {', '.join(JOB_STATUSES)}")
    try:
        limit = int(request.args.get("limit", 20))
        cursor = request.args.get("cursor")
        before = int(cursor) if cursor is not None else None
    except ValueError:
        raise Problem(400, "'limit' must be an integer and 'cursor' a value from 'next_cursor'")
    if not 1 <= limit <= 100:
        raise Problem(400, "'limit' must be from 1 to 100")
    if before is not None and not 0 <= before < 2**62:
        raise Problem(400, "'cursor' must be a value from 'next_cursor'")
    jobs = _ext("store").jobs(g.principal.tenant, status, limit + 1, before)
    page = jobs[:limit]
    return {"jobs": [job_document(job) for job in page],
            "next_cursor": str(page[-1].seq) if len(jobs) > limit else None}


@bp.post("/jobs/<job_id>/cancel")
@require("jobs:write")
def cancel_job(job_id: str):
    job = _own_job(job_id)
    if job.status in (QUEUED, RUNNING):
        _ext("store").request_cancel(job.id)
    return job_document(_ext("store").job(job.id))


@bp.delete("/jobs/<job_id>")
@require("jobs:write")
def delete_job(job_id: str):
    job = _own_job(job_id)
    store = _ext("store")
    store.request_cancel(job.id)  # a running item stops at its next progress report
    _ext("housekeeping").delete_job(job)
    return "", 204


@bp.post("/jobs/<job_id>/callback/redeliver")
@require("jobs:write")
def redeliver_callback(job_id: str):
    """Send the finished job's callback again (a new delivery, with fresh links)."""
    job = _own_job(job_id)
    if not job.callback_url:
        raise Problem(400, "the job has no callback_url")
    if job.status not in JOB_DONE:
        raise Problem(409, "the job is still running; its callback is sent when it ends")
    refused = _ext("store").redeliver(job, _settings().max_deliveries_per_job)
    if refused:
        raise Problem(409 if "on its way" in refused else 429, refused)
    _ext("deliverer").wake()
    return job_document(_ext("store").job(job.id)), 202


@bp.get("/callbacks/secret")
@require("jobs:write")
def callback_secret():
    """The tenant's secret for checking callback signatures (made on first use)."""
    secret, previous, rotated = _ext("store").signing_secret(g.principal.tenant)
    return {"secret": secret, "header": "X-Heygem-Signature", "algorithm": "HMAC-SHA256 of '<t>.<raw body>'",
            "tolerance_seconds": TOLERANCE_SECONDS}
