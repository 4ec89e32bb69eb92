"""Files out: short-lived signed links to one video or a job's ZIP, and the ZIP for API callers."""
from __future__ import annotations

import json
import os

from flask import Blueprint, Response, current_app, send_file
from itsdangerous import BadSignature, SignatureExpired
from zipstream import ZIP_STORED, ZipStream

from .auth import require
from .jobs import _own_job
from .problems import Problem
from .store import SUCCEEDED, Job

bp = Blueprint("downloads", __name__)


def archive(job: Job) -> Response:
    """The job's videos as a ZIP streamed as it is read: stored, not deflated (MP4s do not
    compress), entries named by position only, and a manifest that lists failed items too."""
    stream = ZipStream(compress_type=ZIP_STORED, sized=True)
    manifest = {"job": job.id, "status": job.status, "metadata": job.metadata, "items": []}
    for item in job.items:
        entry = {"index": item.index, "template": item.template, "status": item.status, "error": item.error, "file": None}
        if item.status == SUCCEEDED and item.output and os.path.exists(item.output):
            entry["file"] = os.path.basename(item.output)  # output_001.mp4: never a caller's name
            stream.add_path(item.output, entry["file"])
        manifest["items"].append(entry)
    stream.add(json.dumps(manifest, indent=2).encode(), "manifest.json")
    return Response(stream, mimetype="application/zip", headers={
        "Content-Length": str(len(stream)), "Content-Disposition": f'attachment; filename="heygem-{job.id}.zip"'})


@bp.get("/api/v1/jobs/<job_id>/archive")
@require("jobs:read")
def job_archive(job_id: str):
    return archive(_own_job(job_id))


@bp.get("/download/<token>")
def download(token: str):
    settings = current_app.config["SETTINGS"]
    try:
        target = current_app.extensions["links"].loads(token, max_age=settings.link_ttl)
    except SignatureExpired:
        raise Problem(410, "this download link has expired; fetch the job again for a fresh one")
    except BadSignature:
        raise Problem(404, "no such download")
    if target.startswith("archive:"):
        job = current_app.extensions["store"].job(target[len("archive:"):])
        if job is None:
            raise Problem(404, "the job has been deleted")
        return archive(job)
    kind, _, relative = target.partition(":")
    base = {"output": settings.outputs_dir, "data": settings.data_dir}.get(kind)
    root = os.path.realpath(base) if base else ""
    path = os.path.realpath(os.path.join(root, relative)) if base else ""
    if not base or not path.startswith(root + os.sep) or not os.path.isfile(path):
        raise Problem(404, "the file has been deleted")
    mimetype = "image/jpeg" if path.endswith(".jpg") else "video/mp4"
    if settings.accel_redirect_prefix and kind == "output":  # nginx sends the bytes
        return Response(headers={"X-Accel-Redirect": settings.accel_redirect_prefix.rstrip("/") + "/"
                                 + os.path.relpath(path, root), "Content-Type": mimetype})
    return send_file(path, mimetype=mimetype, as_attachment=False, conditional=True,
                     download_name=os.path.basename(path))
