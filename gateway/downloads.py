"""Files out: short-lived signed links to one video, a job's ZIP or a thumbnail, and the ZIP for
API callers."""
from __future__ import annotations

import json
import os

from flask import Blueprint, Response, current_app, send_file
from zipstream import ZIP_STORED, ZipStream

from . import links, paths
from .auth import require
from .jobs import _own_job
from .problems import Problem
from .store import SUCCEEDED, Job

bp = Blueprint("downloads", __name__)


def archive(job: Job) -> Response:
    """The job's videos as a ZIP streamed as it is read: stored, not deflated (MP4s do not
    compress), entries named by position only, and a manifest that lists failed items too."""
    settings = current_app.config["SETTINGS"]
    stream = ZipStream(compress_type=ZIP_STORED, sized=True)
    manifest = {"job": job.id, "status": job.status, "metadata": job.metadata, "items": []}
    for item in job.items:
        entry = {"index": item.index, "template": item.template, "status": item.status, "error": item.error, "file": None}
        path = paths.output(settings, job.tenant, job.id, item.index)
        if item.status == SUCCEEDED and os.path.isfile(path):
            entry["file"] = os.path.basename(path)  # output_001.mp4: never a caller's name
            stream.add_path(path, entry["file"])
        manifest["items"].append(entry)
    stream.add(json.dumps(manifest, indent=2).encode(), "manifest.json")
    return Response(stream, mimetype="application/zip", headers={
        "Content-Length": str(len(stream)), "Content-Disposition": f'attachment; filename="heygem-{job.id}.zip"'})


@bp.get("/api/v1/jobs/<job_id>/archive")
@require("jobs:read")
def job_archive(job_id: str):
    return archive(_own_job(job_id))


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
    return paths.template_file(settings, template.tenant, template.id, "thumbnail.jpg"), "image/jpeg"


@bp.get("/download/<token>")
def download(token: str):
    settings = current_app.config["SETTINGS"]
    kind, ids = links.read(token)
    if kind == links.ARCHIVE:
        job = current_app.extensions["store"].job(ids[0])
        if job is None:
            raise Problem(404, "the job has been deleted")
        return archive(job)
    path, mimetype = _file(kind, ids)
    if not os.path.isfile(path):
        raise Problem(404, "the file has been deleted")
    if settings.accel_redirect_prefix and kind == links.VIDEO:  # nginx sends the bytes
        relative = os.path.relpath(path, settings.outputs_dir)
        return Response(headers={"X-Accel-Redirect": settings.accel_redirect_prefix.rstrip("/") + "/" + relative,
                                 "Content-Type": mimetype})
    return send_file(path, mimetype=mimetype, as_attachment=False, conditional=True,
                     download_name=os.path.basename(path))
