"""/api/v1/jobs: submit, follow, list, cancel and delete lip-sync jobs."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid

from flask import Blueprint, current_app, g, request, url_for

from .auth import require
from .fetch import FetchError, check_url
from .problems import Problem
from .store import ITEM_DONE, JOB_STATUSES, QUEUED, RUNNING, TEMPLATE_ID_PREFIX, UPLOAD_PREFIX, Conflict, Job

bp = Blueprint("jobs", __name__, url_prefix="/api/v1")
MAX_WAIT = 55.0


def _ext(name: str):
    return current_app.extensions[name]


def _settings():
    return current_app.config["SETTINGS"]


def _link(target: str) -> str:
    """A signed, expiring link to a file under the service's folders (named relative to them, so
    links do not show server paths) or to `archive:<job id>`."""
    settings = _settings()
    if not target.startswith("archive:"):
        for kind, base in (("output", settings.outputs_dir), ("data", settings.data_dir)):
            if target.startswith(base + os.sep):
                target = f"{kind}:{os.path.relpath(target, base)}"
                break
    token = _ext("links").dumps(target)
    if settings.public_url:
        return settings.public_url.rstrip("/") + url_for("downloads.download", token=token)
    return url_for("downloads.download", token=token, _external=True)


def job_document(job: Job) -> dict:
    store = _ext("store")
    done = sum(1 for item in job.items if item.status in ITEM_DONE)
    running = [item for item in job.items if item.status == RUNNING]
    # Progress counts finished items plus the running items' share of frames.
    share = sum(item.frames_done / item.frames_total for item in running if item.frames_total)
    finished = job.status not in (QUEUED, RUNNING)
    items = []
    for item in job.items:
        entry = {"index": item.index, "template": item.template, "status": item.status, "stage": item.stage,
                 "error": item.error, "frames_done": item.frames_done, "frames_total": item.frames_total,
                 "video_url": _link(item.output) if item.status == "succeeded" and item.output else None}
        items.append(entry)
    document = {
        "id": job.id, "status": job.status, "created_at": job.created, "started_at": job.started,
        "finished_at": job.finished, "metadata": job.metadata,
        "progress": {"items_done": done, "items_total": len(job.items),
                     "percent": round(100.0 * (done + share) / len(job.items), 1),
                     "stage": running[0].stage if running else ("finished" if finished else "queued")},
        "queue_position": store.queue_position(job) if job.status == QUEUED else None,
        "items": items,
        "video_urls": [entry["video_url"] for entry in items if entry["video_url"]],
        "archive_url": None,
    }
    if job.zip and finished and document["video_urls"]:
        document["archive_url"] = _link(f"archive:{job.id}")
    return document


def _validated(body: dict, audio_key: str, templates_key: str) -> dict:
    if not isinstance(body, dict):
        raise Problem(400, "send a JSON object")
    settings = _settings()
    audio_url = body.get(audio_key)
    templates = body.get(templates_key)
    if not isinstance(audio_url, str) or not audio_url:
        raise Problem(400, f"'{audio_key}' is required: the URL of the narration audio")
    if isinstance(templates, str):
        templates = [templates]
    if not isinstance(templates, list) or not templates or not all(isinstance(t, str) and t for t in templates):
        raise Problem(400, f"'{templates_key}' is required: a list of 1 to {settings.max_templates} template video URLs")
    if len(templates) > settings.max_templates:
        raise Problem(400, f"'{templates_key}' lists {len(templates)} templates; at most {settings.max_templates} per job")
    callback_url = body.get("callback_url")
    if callback_url is not None and not isinstance(callback_url, str):
        raise Problem(400, "'callback_url' must be a URL string")
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise Problem(400, "'metadata' must be a JSON object")
    wait = body.get("wait_seconds", 0)
    if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not 0 <= wait <= MAX_WAIT:
        raise Problem(400, f"'wait_seconds' must be a number from 0 to {MAX_WAIT:g}")
    zip_ = body.get("zip", False)
    if not isinstance(zip_, bool):
        raise Problem(400, "'zip' must be true or false")
    store, tenant = _ext("store"), g.principal.tenant
    for template in templates:
        if template.startswith(TEMPLATE_ID_PREFIX):
            known = store.template(template, tenant)
            if known is None:
                raise Problem(400, f"no template {template!r}; upload it with POST /api/v1/templates or give a URL")
            if known.status != "ready":
                raise Problem(400, f"template {template!r} was rejected: {known.reason}")
    urls = [audio_url] if not audio_url.startswith(UPLOAD_PREFIX) else []
    urls += [t for t in templates if not t.startswith(TEMPLATE_ID_PREFIX)] + ([callback_url] if callback_url else [])
    for url in urls:
        try:
            check_url(url, settings.allowed_hosts)
        except FetchError as exc:
            raise Problem(400, str(exc))
    return {"audio_url": audio_url, "templates": templates, "callback_url": callback_url,
            "metadata": metadata, "zip": zip_, "wait_seconds": float(wait)}


def _form_body(audio_key: str, templates_key: str) -> tuple[dict, str | None]:
    """A multipart submission: the narration as the `audio` file, the rest as form fields.
    The file is kept under the data directory and stands in for `audio_url`."""
    settings = _settings()
    upload = request.files.get("audio")
    if upload is None:
        raise Problem(400, "a multipart job needs the narration as an 'audio' file (or send JSON with 'audio_url')")
    upload_id = uuid.uuid4().hex
    folder = os.path.join(settings.data_dir, "uploads")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, upload_id)
    upload.save(path)
    size = os.path.getsize(path)
    if not 0 < size <= settings.max_download_mb * 2**20:
        os.remove(path)
        raise Problem(400 if size == 0 else 413, "the narration file is empty" if size == 0 else
                      f"the narration is over the {settings.max_download_mb} MB limit")
    with open(path, "rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
    body: dict = {audio_key: UPLOAD_PREFIX + upload_id, templates_key: request.form.getlist(templates_key)}
    for key in ("callback_url", "wait_seconds", "zip", "metadata"):
        value = request.form.get(key)
        if value is None:
            continue
        try:
            body[key] = json.loads(value) if key != "callback_url" else value
        except ValueError:
            raise Problem(400, f"'{key}' must be JSON (a number, true/false or an object)")
    return body, digest


def _submit(audio_key: str, templates_key: str):
    settings, store = _settings(), _ext("store")
    digest = None
    if request.mimetype == "multipart/form-data":
        body, digest = _form_body(audio_key, templates_key)
    else:
        body = request.get_json(silent=True)
    fields = _validated(body, audio_key, templates_key)
    free_mb = shutil.disk_usage(settings.data_dir).free / 2**20
    if free_mb < settings.min_free_mb:
        raise Problem(503, f"the server is low on disk space ({free_mb:.0f} MB free); try again later")
    if store.queued_items() + len(fields["templates"]) > settings.queue_limit:
        raise Problem(429, "the queue is full; try again in a minute", {"Retry-After": "60"})
    # An uploaded narration counts by its content, not by where it was kept.
    hashed = {k: v for k, v in fields.items() if k != "wait_seconds"}
    if digest:
        hashed["audio_url"] = "sha256:" + digest
    request_hash = hashlib.sha256(json.dumps(hashed, sort_keys=True).encode()).hexdigest()
    try:
        job, created = store.create_job(g.principal.tenant, fields["audio_url"], fields["templates"],
                                        fields["callback_url"], fields["metadata"], fields["zip"],
                                        request.headers.get("Idempotency-Key"), request_hash)
    except Conflict:
        raise Problem(409, "this Idempotency-Key was already used with a different request body")
    _ext("workers").notify()
    deadline = time.monotonic() + fields["wait_seconds"]
    while job.status in (QUEUED, RUNNING) and time.monotonic() < deadline:
        time.sleep(0.25)
        job = store.job(job.id)
    finished = job.status not in (QUEUED, RUNNING)
    return job_document(job), 200 if finished else 202, {"Location": url_for("jobs.get_job", job_id=job.id)}


@bp.post("/jobs")
@require("jobs:write")
def create_job():
    return _submit("audio_url", "templates")


@bp.post("/generate-batch")
@require("jobs:write")
def generate_batch():
    """The request HeyGem integrations already send."""
    return _submit("audio_url", "video_templates")


def _own_job(job_id: str) -> Job:
    job = _ext("store").job(job_id, tenant=g.principal.tenant)
    if job is None:  # another tenant's job is indistinguishable from none
        raise Problem(404, f"no job {job_id!r}")
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
    store.delete_job(job.id)
    _ext("workers").remove_job_files(job.id, job.tenant)
    return "", 204
