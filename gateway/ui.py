"""The operator console: static files (gateway/console/) at / and /ui/, no build step, no CDN.
The page talks to the API with the token the operator pastes."""
from __future__ import annotations

import os

from flask import Blueprint, send_from_directory

FOLDER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "console")
bp = Blueprint("ui", __name__, static_folder=FOLDER, static_url_path="/ui")
# Scripts and styles from this server only; videos and thumbnails may come from an object store.
POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob: http: https:; "
          "media-src 'self' blob: http: https:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
          "form-action 'self'")


@bp.get("/")
def console():
    return send_from_directory(FOLDER, "index.html", max_age=0)


@bp.after_app_request
def _page_headers(response):
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    if response.mimetype == "text/html":
        response.headers["Content-Security-Policy"] = POLICY
        response.headers["Referrer-Policy"] = "no-referrer"
    return response
