"""Helpers for the gateway's tests: settings, tokens, a live server on a real socket."""
from __future__ import annotations

import threading
import time
from http.server import SimpleHTTPRequestHandler

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

    def __init__(self, settings: Settings, start_workers: bool = True):
        self.settings = settings
        self.app = create_app(settings, start_workers=start_workers)
        self.server = make_server(self.app, "127.0.0.1", 0)
        self.port = int(self.server.effective_port)
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()

    def headers(self, tenant="acme", scopes=("jobs:read", "jobs:write")) -> dict:
        return auth(self.settings, tenant, scopes)

    def close(self) -> None:
        self.server.close()
        self.app.extensions["workers"].shutdown()
