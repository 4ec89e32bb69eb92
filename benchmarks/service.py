"""A gateway process for the benchmarks: `heygem serve` on a free port with its own data
directory, plus a local HTTP server for the narration and templates it downloads."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import requests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))  # the test helpers: free ports, an S3 server, a callback receiver
from gateway_support import free_port  # noqa: E402
HEYGEM = os.path.join(os.path.dirname(sys.executable), "heygem")


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def serve_files(folder: str) -> str:
    """Serve `folder` on 127.0.0.1; returns the base URL (allow its host:port, `allowed(base)`)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=folder))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_port}/"


def make_media(folder: str) -> dict[str, str]:
    """A spoken narration (espeak-ng) and the bundled portrait as the template."""
    os.makedirs(folder, exist_ok=True)
    narration = os.path.join(folder, "narration.wav")
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "160", "-w", narration,
                    "Our new product ships today. It is faster, smaller and kinder to the planet."], check=True)
    shutil.copy(os.path.join(ROOT, "engine", "assets", "astronaut.jpg"), os.path.join(folder, "presenter.jpg"))
    return {"narration": "narration.wav", "template": "presenter.jpg"}


def allowed(base_url: str) -> str:
    """The HEYGEM_ALLOWED_HOSTS entry (host:port) of a local file server."""
    return urlsplit(base_url).netloc


class Gateway:
    def __init__(self, data_dir: str | None = None, **settings):
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="heygem-gateway-")
        os.makedirs(self.data_dir, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = dict(os.environ, HEYGEM_DATA_DIR=self.data_dir, HEYGEM_PORT=str(self.port), HEYGEM_MIN_FREE_MB="100",
                        **{f"HEYGEM_{k.upper()}": str(v) for k, v in settings.items()})
        self.process: subprocess.Popen | None = None

    def token(self, *scopes: str) -> str:
        command = [HEYGEM, "token", "create", "--tenant", "bench", "--ttl", "1d"]
        command += [argument for scope in scopes for argument in ("--scope", scope)]
        return subprocess.run(command, env=self.env, capture_output=True, text=True, check=True).stdout.strip()

    def start(self) -> "Gateway":
        log = open(os.path.join(self.data_dir, "serve.out"), "a")
        self.process = subprocess.Popen([HEYGEM, "serve"], env=self.env, stdout=log, stderr=log)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if requests.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the gateway did not start; see {self.data_dir}/serve.out")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash or an OOM kill."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
