"""/api/v1/templates: presenter templates uploaded (or fetched) once, analysed once, then named
by id in any number of jobs."""
from __future__ import annotations

import os
import shutil
import threading
import time
import uuid

import cv2
from flask import Blueprint, current_app, g, request
from werkzeug.utils import secure_filename

import engine
from engine.media import probe_video, read_frames, read_image

from . import links, paths, uploads
from .auth import require
from .edge import accepts_uploads
from .fetch import FetchLimits, fetch
from .jobs import _settings, json_body
from .problems import Problem
from .store import TEMPLATE_ID_PREFIX, Template
from .urlpolicy import OutboundError
from .engines.embedded import engine_message

bp = Blueprint("templates", __name__, url_prefix="/api/v1")
THUMBNAIL_SIDE = 320


class AnalysisSlots:
    """Analysing a template holds a server thread for seconds to minutes: only a few run at once,
    and one per tenant, so that no tenant can take them all."""

    def __init__(self, total: int):
        self.total, self.lock, self.running = max(1, total), threading.Lock(), {}

    def take(self, tenant: str) -> str | None:
        """None when a slot was taken for `tenant`; else why not."""
        with self.lock:
            if self.running.get(tenant):
                return "one of your templates is being analysed already; send the next when it is done"
            if sum(self.running.values()) >= self.total:
                return f"{self.total} templates are being analysed already; try again in a minute"
            self.running[tenant] = 1
            return None

    def give_back(self, tenant: str) -> None:
        with self.lock:
            self.running.pop(tenant, None)


def _thumbnail(path: str, is_image: bool, fps: float, dest: str, limits) -> str | None:
    image = read_image(path, limits) if is_image else next((frame for _, frame in read_frames(path, fps, 0, 1)), None)
    if image is None:
        return None
    height, width = image.shape[:2]
    scale = THUMBNAIL_SIDE / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))  # a 1x2000 strip stays 1 px wide
    cv2.imwrite(dest, cv2.resize(image, size, interpolation=cv2.INTER_AREA), [cv2.IMWRITE_JPEG_QUALITY, 85])
    return dest


def document(template: Template) -> dict:
    return {"id": template.id, "name": template.name, "status": template.status, "reason": template.reason,
            "width": template.width, "height": template.height, "fps": template.fps, "duration": template.duration,
            "faces": template.faces, "created_at": template.created,
            "thumbnail_url": current_app.extensions["links"].download(links.THUMBNAIL, template.id, base=request.host_url)
            if template.thumbnail else None}


@bp.post("/templates")
@require("jobs:write")
@accepts_uploads
def create_template():
    settings, store, tenant = _settings(), current_app.extensions["store"], g.principal.tenant
    analyses = current_app.extensions["analyses"]
    busy = analyses.take(tenant)
    if busy:
        raise Problem(503, busy, {"Retry-After": "30"})
    gone = request.environ.get("waitress.client_disconnected")

    def keep_going(*_) -> None:  # nobody waits for the answer any more: stop, keep nothing
        if gone and gone():
            raise Problem(408, "the client went away; the template was not kept")
    template_id = TEMPLATE_ID_PREFIX + uuid.uuid4().hex[:20]
    folder = paths.template_dir(settings, tenant, template_id)
    source = paths.template_file(settings, tenant, template_id, "source")
    try:
        os.makedirs(folder, exist_ok=True)
        upload = request.files.get("file")
        if upload is not None:
            name = secure_filename(upload.filename or "") or "template"
            upload.save(source)
            if os.path.getsize(source) > settings.max_upload_mb * 2**20:
                raise Problem(413, f"the file is over the {settings.max_upload_mb} MB limit")
        else:
            url = json_body().get("url") if request.mimetype != "multipart/form-data" else None
            if not isinstance(url, str) or not url:
                raise Problem(400, "send the template as a multipart 'file' or as JSON {\"url\": ...}")
            name = secure_filename(os.path.basename(url.split("?")[0].split("#")[0])) or "template"
            try:
                fetch(current_app.extensions["urlpolicy"], url, source, FetchLimits.from_settings(settings),
                      keep_going)
            except OutboundError as exc:
                raise Problem(400, str(exc))
        if os.path.getsize(source) == 0:
            raise Problem(400, f"{name}: the file is empty")
        status, reason, track = "ready", None, None
        limits = settings.engine_limits
        try:
            track = engine.prepare_template(source, cache_dir=paths.template_cache(settings), limits=limits,
                                            on_progress=keep_going)
        except engine.NoFaceError as exc:
            status, reason = "rejected", engine_message(exc, {source: name})
        except engine.MediaError as exc:
            raise Problem(400, engine_message(exc, {source: name}))
        info = track.info if track else probe_video(source, limits)
        thumbnail = _thumbnail(source, info.is_image, info.fps,
                               paths.template_file(settings, tenant, template_id, "thumbnail.jpg"), limits)
        template = Template(template_id, tenant, name, source, status, reason, info.width, info.height,
                            info.fps, info.duration if not info.is_image else None,
                            track.faces_max if track else 0, thumbnail, time.time())
        # Workers on other machines read the template, and its analysis, from object storage.
        analysis = track and engine.analysis_file(source, paths.template_cache(settings))
        for kept in (path for path in (source, thumbnail, analysis) if path and os.path.exists(path)):
            uploads.share(current_app.extensions["shared"], kept)
        store.add_template(template)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    finally:
        analyses.give_back(tenant)
    return document(template), 201


@bp.get("/templates")
@require("jobs:read")
def list_templates():
    return {"templates": [document(t) for t in current_app.extensions["store"].templates(g.principal.tenant)]}


def _own_template(template_id: str) -> Template:
    template = current_app.extensions["store"].template(template_id, g.principal.tenant)
    if template is None:
        raise Problem(404, f"no template {template_id!r}")
    return template


@bp.get("/templates/<template_id>")
@require("jobs:read")
def get_template(template_id: str):
    return document(_own_template(template_id))


@bp.delete("/templates/<template_id>")
@require("jobs:write")
def delete_template(template_id: str):
    template = _own_template(template_id)
    current_app.extensions["store"].delete_template(template.id)
    shutil.rmtree(paths.template_dir(_settings(), template.tenant, template.id), ignore_errors=True)
    for name in ("source", "thumbnail.jpg"):
        current_app.extensions["shared"].remove(paths.template_file(_settings(), template.tenant, template.id, name))
    return "", 204
