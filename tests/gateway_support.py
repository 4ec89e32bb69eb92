"""Helpers for the gateway's tests: settings, tokens, a live server on a real socket."""
from __future__ import annotations

import hashlib
import hmac
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer

import requests

from gateway import create_app
from gateway.auth import create_token
from gateway.config import Settings
from gateway.edge import make_server

SECRET = "a-test-secret-that-is-long-enough-for-hs256"
TERMINAL = {"succeeded", "partial", "failed", "canceled"}


class FilesHandler(SimpleHTTPRequestHandler):
    """Serves the media fixtures; /redirect-internal redirects to the cloud metadata address."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path.startswith("/redirect-internal"):
            self.send_response(302)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
            self.end_headers()
            return
        super().do_GET()


def make_settings(tmp_path, files=None, **overrides) -> Settings:
    """Settings for a test service; the test file server (`files`) is allowed past the URL policy."""
    values = dict(data_dir=str(tmp_path / "data"), allowed_hosts=[files["allow"]] if files else [],
                  jwt_secret=SECRET, min_free_mb=1, max_download_mb=2)
    values.update(overrides)
    return Settings.from_env(env={}, **values)


def auth(settings, tenant="acme", scopes=("jobs:read", "jobs:write"), ttl=600):
    return {"Authorization": "Bearer " + create_token(settings, tenant, list(scopes), ttl)[0]}


def until(condition, timeout=90, what="the condition"):
    """`condition()`'s first true value, asked every 0.1 s; AssertionError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def wait(client, headers, job_id, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/api/v1/jobs/{job_id}", headers=headers).get_json()
        if job["status"] in TERMINAL:
            return job
        time.sleep(0.2)
    raise AssertionError(f"job still {job['status']} after {timeout} s")


class LiveServer:
    """The service on 127.0.0.1 behind the same server `heygem serve` runs, in this process."""

    def __init__(self, settings: Settings, start_workers: bool = True, port: int = 0):
        self.settings = settings
        self.app = create_app(settings, start_workers=start_workers)
        self.server = make_server(self.app, "127.0.0.1", port)
        self.port = int(self.server.effective_port)
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()

    def headers(self, tenant="acme", scopes=("jobs:read", "jobs:write")) -> dict:
        return auth(self.settings, tenant, scopes)

    def close(self) -> None:
        self.server.close()
        self.app.extensions["workers"].shutdown()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class S3Server:
    """A real S3 HTTP server (moto's) on 127.0.0.1, in its own process; `stop` and `start` again
    on the same port (it comes back empty, as a store that lost its data would)."""

    ACCESS_KEY, SECRET_KEY = "heygem-test", "heygem-test-secret"

    def __init__(self):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.process = None
        self.start()

    def start(self) -> None:
        command = [os.path.join(os.path.dirname(sys.executable), "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                requests.get(self.endpoint + "/", timeout=1)
                return
            except requests.ConnectionError:
                time.sleep(0.1)
        raise RuntimeError("moto_server did not start")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)

    def settings(self, **overrides) -> dict:
        return {"storage": "s3", "s3_endpoint": self.endpoint, "s3_access_key": self.ACCESS_KEY,
                "s3_secret_key": self.SECRET_KEY, "s3_bucket": "videos", "storage_backoff_max_seconds": 0.5, **overrides}

    def client(self):
        from minio import Minio
        return Minio(f"127.0.0.1:{self.port}", self.ACCESS_KEY, self.SECRET_KEY, secure=False, region="us-east-1")


class CallbackReceiver:
    """An HTTP receiver on 127.0.0.1 that answers POSTs from a script: a number is a status to
    answer, "drop" closes the connection without answering; after the script, 200. It records
    every request and checks its signature when given the secret."""

    def __init__(self, script=(), retry_after=None):
        self.script, self.retry_after = list(script), retry_after
        self.requests: list[dict] = []
        self.secret = None
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                action = receiver.script.pop(0) if receiver.script else 200
                receiver.requests.append({"headers": dict(self.headers), "body": body, "time": time.time(),
                                          "answer": action, "valid": receiver.valid(self.headers, body)})
                if action == "drop":
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                self.send_response(action)
                if receiver.retry_after is not None and action in (429, 503):
                    self.send_header("Retry-After", str(receiver.retry_after))
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.allow = f"127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def valid(self, headers, body: bytes) -> bool | None:
        """The signature checked as a receiver would (README's snippet)."""
        if self.secret is None:
            return None
        parts = [p.split("=", 1) for p in headers.get("X-Heygem-Signature", "").split(",")]
        timestamp = next((v for k, v in parts if k == "t"), "0")
        expected = hmac.new(self.secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
        fresh = abs(time.time() - int(timestamp)) < 300
        return fresh and any(k == "v1" and hmac.compare_digest(v, expected) for k, v in parts)

    def accepted(self) -> list[dict]:
        return [r for r in self.requests if r["answer"] == 200]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
