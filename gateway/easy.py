"""HeyGem's own video API (Duix.Heygem's /easy/submit and /easy/query), backed by our jobs, so
that HeyGem's clients, ComfyUI nodes and scripts written for it work unchanged against this
service: one narration and one template per task, named by the caller's `code`.

Answers keep HeyGem's shape ({code, data, msg, success}, HTTP 200) and codes: 10000 ok, 10001
busy (our queue is full: try again later), 10002 bad parameter, 10004 no such task, 9999 error.
Unlike HeyGem, a finished task is not forgotten once reported; `result` is a link to the video.
Tokens as everywhere (Authorization: Bearer), or `?token=` with HEYGEM_EASY_TOKEN_IN_QUERY."""
from __future__ import annotations

from flask import Blueprint, current_app, g, request

from .auth import require, token_in_query
from .engines.heygem_easy import BAD_PARAMETER, BUSY, DONE, FAILED as TASK_FAILED, NO_TASK, OK, RUNNING as TASK_RUNNING
from .jobs import IDEMPOTENCY_KEY, _validated, enqueue, job_document, json_body
from .problems import Problem
from .store import CANCELED, FAILED, QUEUED, RUNNING, SUCCEEDED

bp = Blueprint("easy", __name__, url_prefix="/easy")
KEY_PREFIX = "easy:"  # the job's idempotency key is the task's code


def answer(code: int, msg: str = "", data: dict | None = None) -> dict:
    return {"code": code, "data": data or {}, "msg": msg, "success": code == OK}


def _code(value) -> str:
    if not isinstance(value, str) or not IDEMPOTENCY_KEY.fullmatch(value):
        raise Problem(400, "'code' is required: the task's id, 1-200 visible ASCII characters (HeyGem clients send a UUID)")
    return value


@bp.post("/submit")
@require("jobs:write")
@token_in_query
def submit():
    try:
        body = json_body()
        code = _code(body.get("code"))
        for name in ("audio_url", "video_url"):
            if not isinstance(body.get(name), str) or not body[name].strip():
                raise Problem(400, f"'{name}' is required: an http(s) URL"
                              + (" or a template id from /api/v1/templates" if name == "video_url" else ""))
        fields = _validated({"audio_url": body["audio_url"].strip(), "templates": [body["video_url"].strip()],
                             "callback_url": body.get("callback_url")}, "audio_url", "templates", uploaded=False)
        fields.pop("wait_seconds")
        enqueue(fields, KEY_PREFIX + code)
    except Problem as problem:
        if problem.status == 409:
            return answer(BAD_PARAMETER, f"code {body.get('code')!r} was used for another task; use a new code")
        if problem.status in (429, 503):
            return answer(BUSY, problem.detail)
        if problem.status == 400:
            return answer(BAD_PARAMETER, problem.detail)
        raise
    current_app.extensions["workers"].notify()
    return answer(OK)


@bp.get("/query")
@require("jobs:read")
@token_in_query
def query():
    try:
        code = _code(request.args.get("code"))
    except Problem as problem:
        return answer(BAD_PARAMETER, problem.detail)
    job = current_app.extensions["store"].job_by_key(g.principal.tenant, KEY_PREFIX + code)
    if job is None:
        return answer(NO_TASK, "task not found")
    document = job_document(job)
    item = job.items[0]
    if job.status in (QUEUED, RUNNING) or item.status not in (SUCCEEDED, FAILED, CANCELED):
        return answer(OK, document["progress"]["stage"], {
            "code": code, "status": TASK_RUNNING, "progress": int(document["progress"]["percent"]),
            "result": "", "msg": document["progress"]["stage"]})
    if item.status == SUCCEEDED and document["video_urls"]:
        return answer(OK, "success", {"code": code, "status": DONE, "progress": 100,
                                      "result": document["video_urls"][0], "msg": "success"})
    reason = item.error or ("canceled" if item.status == CANCELED else "failed")
    return answer(OK, reason, {"code": code, "status": TASK_FAILED, "progress": int(document["progress"]["percent"]),
                               "result": "", "msg": reason})
