"""The HTTP edge: what is refused before a request's body is read, and the server that enforces it.

Waitress reads a whole request, body included, before a thread runs the application, so a size
limit or a token checked in a view comes after the upload has been received. Here a request's
line and headers are judged as soon as they arrive: only routes that need a token take a body; a
body larger than its route takes (uploads take far more than JSON), or sent without a valid
token, is refused then and the connection closed unread. A tenant sends only so many bodies at
once, and all bodies held must fit on the disk. The same admission runs in the application
(`install`), for any other WSGI server and for Flask's test client.

Waitress itself handles connections without threads (idle and slow clients hold a socket, not a
thread); `make_server` sets its connection limit and idle timeout, a limit per client address,
and a deadline for a request's headers (slowloris)."""
from __future__ import annotations

import ipaddress
import logging
import resource
import shutil
import tempfile
import time
from dataclasses import dataclass
from http import HTTPStatus

from flask import Flask, request
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.server import TcpWSGIServer
from waitress.utilities import Error
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from .auth import authorization, authorize, verify
from .problems import Problem, document

log = logging.getLogger("heygem.access")
BODY_GRACE_SECONDS = 10.0  # before a body's rate is judged


def accepts_uploads(view):
    """Marks a view that takes multipart file uploads: its bodies may be as large as uploads."""
    view.accepts_uploads = True
    return view


@dataclass(frozen=True)
class Admission:
    refusal: Problem | None
    body_limit: int          # bytes
    tenant: str | None = None  # who sends the body, once its token is checked


def admit(app: Flask, method: str, path: str, content_type: str, length: int | None, chunked: bool,
          header: str, query: str | bytes = "") -> Admission:
    """Judge a request from its line and headers alone. Only routes that need a token take a
    body: public and unknown routes take none, so nobody can hold a connection with one."""
    settings = app.config["SETTINGS"]
    has_body = chunked or bool(length)
    try:
        endpoint, _ = app.url_map.bind("localhost").match(path, method)
        view = app.view_functions.get(endpoint)
    except MethodNotAllowed as exc:  # answered here when a body comes along, as the app would
        allow = {"Allow": ", ".join(sorted(exc.valid_methods or ()))}
        return Admission(Problem(405, "the method is not allowed here", allow) if has_body else None, 0)
    except HTTPException:
        return Admission(Problem(404, "no such route") if has_body else None, 0)
    scope = getattr(view, "required_scope", None)
    if not scope:
        return Admission(Problem(413, "this route takes no request body") if has_body else None, 0)
    if content_type.split(";")[0].strip().lower() == "multipart/form-data" and getattr(view, "accepts_uploads", False):
        limit, what = settings.max_upload_mb * 2**20 + 2**20, f"{settings.max_upload_mb} MB for an upload"
    else:
        limit, what = settings.max_json_kb * 1024, f"{settings.max_json_kb} KB for a request without a file"
    if not has_body:
        return Admission(None, limit)
    try:
        principal = verify(authorization(view, header, query, settings), settings, app.extensions["store"])
        authorize(principal, scope)
    except Problem as refusal:
        return Admission(refusal, limit)
    if length is not None and length > limit:
        return Admission(Problem(413, f"the request body is {_size(length)}; the limit is {what}"), limit)
    return Admission(None, limit, principal.tenant)


def _size(count: int) -> str:
    return f"{count / 2**20:.1f} MB" if count >= 2**20 else f"{count / 1024:.1f} KB"


def install(app: Flask) -> None:
    """The edge's rules inside the application, and the body limit enforced while reading."""
    @app.before_request
    def _admit() -> None:
        chunked = "chunked" in request.headers.get("Transfer-Encoding", "").lower()
        admission = admit(app, request.method, request.path, request.content_type or "",
                          request.content_length, chunked, request.headers.get("Authorization", ""),
                          request.query_string)
        if admission.refusal:
            raise admission.refusal
        request.max_content_length = admission.body_limit


class _Refusal(Error):
    """A Problem as waitress's own error response (which also closes the connection)."""

    def __init__(self, problem: Problem):
        super().__init__(problem.detail)
        self.code, self.reason, self.problem = problem.status, HTTPStatus(problem.status).phrase, problem

    def to_response(self, ident=None):
        headers = [("Content-Type", "application/problem+json"), *self.problem.headers.items()]
        return f"{self.code} {self.reason}", headers, document(self.code, self.problem.detail)


class _Parser(HTTPRequestParser):
    """Waitress's request parser, judging each request as soon as its headers are in."""

    app: Flask
    server: TcpWSGIServer

    def __init__(self, adj):
        super().__init__(adj)
        self.first_byte = None
        self.body_started = None
        self.body_limit = None
        self.refusal = None
        self.tenant = None   # set for a body that was admitted
        self.declared = 0    # bytes it may take

    def _bodies_in_flight(self) -> list["_Parser"]:
        """Other admitted bodies the server holds: being received, or received and waiting for
        (or in) their turn. Waitress keeps each whole, in memory or a temporary file."""
        held = []
        for channel in list(self.server.active_channels.values()):
            for parser in (channel.request, *list(channel.requests)):
                if isinstance(parser, _Parser) and parser is not self and parser.tenant:
                    held.append(parser)
        return held

    def _reserve(self, tenant: str, declared: int) -> Problem | None:
        """Room for a body: a tenant sends a few at once at most, and all bodies together must
        fit on the disk (half-sent uploads would otherwise fill it)."""
        settings = self.app.config["SETTINGS"]
        held = self._bodies_in_flight()
        sending = sum(1 for parser in held if parser.tenant == tenant and not parser.completed)
        if sending >= settings.max_uploads_per_tenant:
            return Problem(429, f"{sending} requests from this tenant are still sending their bodies; "
                           "wait for one to finish", {"Retry-After": "30"})
        room = shutil.disk_usage(tempfile.gettempdir()).free - settings.min_free_mb * 2**20
        if declared + sum(parser.declared for parser in held) > room:
            return Problem(503, "the server has no room for this upload now; try again later", {"Retry-After": "60"})
        self.tenant, self.declared = tenant, declared
        return None

    def received(self, data):
        if self.first_byte is None:
            self.first_byte = time.monotonic()
        deadline = self.app.config["SETTINGS"].http_header_timeout
        if not self.headers_finished and time.monotonic() - self.first_byte > deadline:
            HTTPRequestParser.parse_header(self, b"GET / HTTP/1.0\r\n")  # as waitress does for its own header errors
            self._refuse(Problem(408, f"the request's headers took over {deadline:g} s to arrive"))
            return len(data)
        consumed = super().received(data)
        if self.headers_finished and not self.completed:  # a body is arriving
            now = time.monotonic()
            self.body_started = self.body_started or now
            elapsed, min_rate = now - self.body_started, self.app.config["SETTINGS"].http_min_body_rate
            if self.body_limit is not None and self.body_bytes_received > self.body_limit:
                self._refuse(Problem(413, f"the request body is over the {_size(self.body_limit)} limit"))
            elif elapsed > BODY_GRACE_SECONDS and self.body_bytes_received < min_rate * elapsed:
                # A body that trickles in holds its connection and its room on the disk.
                self._refuse(Problem(408, f"the request body arrives at under {_size(min_rate)}/s"))
        if self.refusal:  # waitress's own checks after the headers must not replace it
            self.error = self.refusal
        return consumed

    def parse_header(self, header_plus):
        super().parse_header(header_plus)
        admission = admit(self.app, self.command, self.path, self.headers.get("CONTENT_TYPE", ""),
                          None if self.chunked else self.content_length, self.chunked,
                          self.headers.get("AUTHORIZATION", ""), self.query)
        self.body_limit = admission.body_limit
        refusal = admission.refusal
        if refusal is None and admission.tenant:
            refusal = self._reserve(admission.tenant, admission.body_limit if self.chunked else self.content_length)
        if refusal:
            self._refuse(refusal)

    def _refuse(self, problem: Problem) -> None:
        self.error = self.refusal = _Refusal(problem)
        self.completed = True
        self.expect_continue = False  # no "100 Continue": the body is not wanted
        log.info("request", extra={"event": "request", "method": getattr(self, "command", None),
                                   "path": getattr(self, "path", None), "status": problem.status, "edge": True})


def _client(addr) -> str:
    """Who a connection is from: its IPv4 address, or its IPv6 /64 (one host's usual share)."""
    host = addr[0] if isinstance(addr, tuple) else str(addr)
    try:
        address = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address) and not address.ipv4_mapped:
        return str(ipaddress.IPv6Network(f"{address}/64", strict=False))
    return str(address.ipv4_mapped or address) if isinstance(address, ipaddress.IPv6Address) else str(address)


class _Channel(HTTPChannel):
    """A connection; one client may hold only so many at once. (Runs inside the server's
    accept: an exception here would close the listening socket.)"""

    app: Flask

    def __init__(self, server, sock, addr, adj, map=None):
        super().__init__(server, sock, addr, adj, map)
        self.client = _client(addr)
        limit = self.app.config["SETTINGS"].http_connections_per_client
        if limit and sum(1 for channel in list(server.active_channels.values())
                         if getattr(channel, "client", None) == self.client) > limit:
            # Answered like any refused request (waitress's error task), then closed.
            refused = self.parser_class(adj)
            HTTPRequestParser.parse_header(refused, b"GET / HTTP/1.0\r\n")
            refused.error = _Refusal(Problem(503, f"{self.client} has {limit} connections open already; "
                                                  "close some or reuse them", {"Retry-After": "10"}))
            refused.completed = True
            self.requests.append(refused)
            server.add_task(self)


def make_server(app: Flask, host: str, port: int) -> TcpWSGIServer:
    """Waitress for `app` on host:port, with the edge's rules and the connection settings."""
    settings = app.config["SETTINGS"]
    parser = type("Parser", (_Parser,), {"app": app})
    channel = type("Channel", (_Channel,), {"parser_class": parser, "app": app})
    server_class = type("Server", (TcpWSGIServer,), {"channel_class": channel})
    largest_body = max(settings.max_upload_mb * 2**20 + 2**20, settings.max_json_kb * 1024)
    _allow_open_files(settings.http_connection_limit + 512)
    # channel_request_lookahead: waitress keeps reading while a request runs, so a view can see
    # (waitress.client_disconnected) that its client left.
    server = server_class(app, host=host, port=port, threads=settings.http_threads, ident="heygem-gateway",
                          connection_limit=settings.http_connection_limit, channel_timeout=settings.http_idle_timeout,
                          cleanup_interval=max(1, min(10, settings.http_idle_timeout)), asyncore_use_poll=True,
                          max_request_body_size=largest_body + 1, backlog=2048, channel_request_lookahead=1)
    parser.server = server
    return server


def _allow_open_files(needed: int) -> None:
    """Each connection is an open file: raise the soft limit (often 1024) towards the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    if wanted < needed:
        log.warning("open files limited", extra={"event": "startup", "open_files": wanted, "needed": needed})
