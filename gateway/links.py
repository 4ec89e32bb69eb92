"""Signed, expiring download links. A link names one thing by id (a job's video, a job's ZIP, a
template's thumbnail), never a path: the file is found from the store when the link is used, so a
link can reach nothing else, whoever holds the key."""
from __future__ import annotations

from flask import current_app, url_for
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from .problems import Problem

VIDEO, ARCHIVE, THUMBNAIL = "video", "archive", "thumbnail"


def serializer(secret: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(secret, salt="heygem-download-v2")


def link(kind: str, *ids) -> str:
    """A link to a job's video (job id, item index), a job's ZIP (job id) or a template's
    thumbnail (template id)."""
    settings = current_app.config["SETTINGS"]
    token = current_app.extensions["links"].dumps([kind, *ids])
    if settings.public_url:
        return settings.public_url.rstrip("/") + url_for("downloads.download", token=token)
    return url_for("downloads.download", token=token, _external=True)


def read(token: str) -> tuple[str, list]:
    """(kind, ids) named by a link; Problem 404 (forged) or 410 (expired)."""
    try:
        named = current_app.extensions["links"].loads(token, max_age=current_app.config["SETTINGS"].link_ttl)
    except SignatureExpired:
        raise Problem(410, "this download link has expired; fetch the job again for a fresh one")
    except BadSignature:
        raise Problem(404, "no such download")
    if not isinstance(named, list) or not named or named[0] not in (VIDEO, ARCHIVE, THUMBNAIL):
        raise Problem(404, "no such download")
    return named[0], named[1:]
