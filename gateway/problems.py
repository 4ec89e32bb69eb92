"""Errors as RFC 7807 problem documents (application/problem+json) with a human message."""
from __future__ import annotations

import json
import logging
import uuid
from http import HTTPStatus

from flask import Flask, Response
from werkzeug.exceptions import HTTPException

log = logging.getLogger("heygem.errors")


class Problem(Exception):
    def __init__(self, status: int, detail: str, headers: dict | None = None):
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers or {}


def document(status: int, detail: str, **extra) -> bytes:
    return json.dumps({"type": "about:blank", "title": HTTPStatus(status).phrase, "status": status,
                       "detail": detail, **extra}).encode()


def _response(status: int, detail: str, headers: dict | None = None, **extra) -> Response:
    response = Response(document(status, detail, **extra), status=status, content_type="application/problem+json")
    response.headers.update(headers or {})
    return response


def fault_id() -> str:
    """An id for an unexpected error: in the answer and, with the traceback, in the log."""
    return uuid.uuid4().hex[:16]


def register(app: Flask) -> None:
    @app.errorhandler(Problem)
    def problem(error: Problem):
        return _response(error.status, error.detail, error.headers)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        # Keep the exception's own headers (Allow on a 405), not its HTML content type.
        headers = {k: v for k, v in error.get_headers() if k.lower() != "content-type"}
        return _response(error.code or 500, error.description or error.name, headers)

    @app.errorhandler(Exception)
    def fault(error: Exception):
        error_id = fault_id()
        log.error("unhandled error", exc_info=error, extra={"event": "fault", "error_id": error_id})
        return _response(500, f"the gateway hit an internal fault (error id {error_id}); it is logged",
                         error_id=error_id)
