"""Errors as RFC 7807 problem documents (application/problem+json) with a human message."""
from __future__ import annotations

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException


class Problem(Exception):
    def __init__(self, status: int, detail: str, headers: dict | None = None):
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers or {}


def _response(status: int, title: str, detail: str, headers: dict | None = None):
    response = jsonify({"type": "about:blank", "title": title, "status": status, "detail": detail})
    response.status_code = status
    response.content_type = "application/problem+json"
    response.headers.update(headers or {})
    return response


def register(app: Flask) -> None:
    from http import HTTPStatus

    @app.errorhandler(Problem)
    def problem(error: Problem):
        return _response(error.status, HTTPStatus(error.status).phrase, error.detail, error.headers)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        # Keep the exception's own headers (Allow on a 405), not its HTML content type.
        headers = {k: v for k, v in error.get_headers() if k.lower() != "content-type"}
        return _response(error.code or 500, error.name, error.description or error.name, headers)

    @app.errorhandler(Exception)
    def fault(error: Exception):
        app.logger.exception("unhandled error")
        return _response(500, "Internal Server Error", "the gateway hit an internal fault; it is logged")
