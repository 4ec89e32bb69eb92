"""Files out: short-lived signed links to one video, a job's ZIP or a thumbnail, and the ZIP for
API callers."""
from __future__ import annotations

import os

from flask import Blueprint, Response, current_app, redirect, request, send_file

from . import links, paths
from .archives import Gone, archive
from .auth import require
from .jobs import _own_job
from .problems import Problem
from .storage import StorageError
from .store import JOB_DONE, SUCCEEDED, Job

bp = Blueprint("downloads", __name__)


def _send(path: str, mimetype: str, download_name: str | None = None) -> Response:
    """A file under the outputs or template folders; nginx sends outputs when configured to.

    Otherwise the server sends the file itself, from its event loop (wsgi.file_wrapper): a client
    that reads slowly holds a socket, not a thread. Werkzeug answers a Range request with a
    generator over the file, which a thread would have to push; waitress is handed the file
    instead, opened at the range's start, and sends Content-Length bytes of it."""
    settings = current_app.config["SETTINGS"]
    if settings.accel_redirect_prefix and path.startswith(settings.outputs_dir + os.sep):
        relative = os.path.relpath(path, settings.outputs_dir)
        headers = {"X-Accel-Redirect": settings.accel_redirect_prefix.rstrip("/") + "/" + relative,
                   "Content-Type": mimetype}
        if download_name:
            headers["Content-Disposition"] = f'attachment; filename="{download_name}"'
        return Response(headers=headers)
    response = send_file(path, mimetype=mimetype, as_attachment=download_name is not None, conditional=True,
                         download_name=download_name or os.path.basename(path))
    file_wrapper = request.environ.get("wsgi.file_wrapper")
    if response.status_code == 206 and file_wrapper is not None:
        start = int(response.headers["Content-Range"].split()[1].split("-")[0])  # bytes START-END/SIZE
        response.response.close()
        handle = open(path, "rb")
        handle.seek(start)
        response.response = file_wrapper(handle, 1 << 16)
    return response


def _archive(job: Job) -> Response:
    if job.status not in JOB_DONE:
        raise Problem(409, "the job is still running; its ZIP is made when it finishes")
    if job.archive_key:  # in the bucket
        return redirect(current_app.extensions["links"].archive(job), 302)
    if current_app.extensions["storage"].remote:  # the videos are in the bucket, not here to zip
        raise Problem(404, job.archive_error or "this job has no ZIP: ask for one with 'zip': true when submitting")
    try:
        path = archive(current_app.config["SETTINGS"], job)
    except Gone:
        raise Problem(404, "the job has been deleted")
    return _send(path, "application/zip", f"heygem-{job.id}.zip")


@bp.get("/api/v1/jobs/<job_id>/archive")
@require("jobs:read")
def job_archive(job_id: str):
    return _archive(_own_job(job_id))


def _file(kind: str, ids: list) -> tuple[str, str]:
    """(path, content type) of the video or thumbnail a link names; Problem 404 when it is gone."""
    settings, store = current_app.config["SETTINGS"], current_app.extensions["store"]
    gone = Problem(404, "the file has been deleted")
    if kind == links.VIDEO:
        job_id, index = ids
        job = store.job(job_id)
        if job is None or not 0 <= index < len(job.items) or job.items[index].status != SUCCEEDED:
            raise gone
        return paths.output(settings, job.tenant, job.id, index), "video/mp4"
    template = store.template(ids[0])
    if template is None or not template.thumbnail:
        raise gone
    path = paths.template_file(settings, template.tenant, template.id, "thumbnail.jpg")
    try:
        current_app.extensions["shared"].fetch(path)  # made by another gateway
    except StorageError as exc:
        raise Problem(503, "object storage is unreachable; try again shortly", {"Retry-After": "30"}) from exc
    return path, "image/jpeg"


@bp.get("/download/<token>")
def download(token: str):
    kind, ids = current_app.extensions["links"].read(token)
    if kind == links.ARCHIVE:
        job = current_app.extensions["store"].job(ids[0])
        if job is None:
            raise Problem(404, "the job has been deleted")
        return _archive(job)
    path, mimetype = _file(kind, ids)
    if not os.path.isfile(path):
        raise Problem(404, "the file has been deleted")
    return _send(path, mimetype)


@bp.get("/engine-inputs/<ident>/<name>")
def engine_input(ident: str, name: str):
    """A narration or template for a remote engine (HEYGEM_ENGINE=heygem-easy without a shared
    folder): the link's random id, made for one task and valid for minutes, is the credential."""
    path = current_app.extensions["links"].engine_input_file(ident)
    if path is None or not os.path.isfile(path):
        raise Problem(404, "no such input (the link has expired, or its task has ended)")
    return _send(path, "application/octet-stream")
