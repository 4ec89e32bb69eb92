"""`nginx -t` on the shipped deploy/nginx.conf, with the upstream of a plain install and with
docker-compose.yml's, each included as the install puts it (beside the main config)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
NGINX = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
pytestmark = pytest.mark.skipif(not NGINX, reason="nginx is not installed (Debian: apt-get install nginx)")


def nginx_t(tmp_path: Path, upstream: str) -> subprocess.CompletedProcess:
    shutil.copy(DEPLOY / upstream, tmp_path / "heygem-upstream.conf")
    temp = " ".join(f"{kind}_temp_path {tmp_path / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    (tmp_path / "nginx.conf").write_text(
        f"error_log stderr;\npid {tmp_path / 'nginx.pid'};\nevents {{}}\n"
        f"http {{\n    {temp}\n    include {DEPLOY / 'nginx.conf'};\n}}\n")
    return subprocess.run([NGINX, "-t", "-q", "-e", "stderr", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
                          capture_output=True, text=True)


def test_plain_install(tmp_path):
    run = nginx_t(tmp_path, "heygem-upstream.conf")
    assert run.returncode == 0, run.stderr


def test_compose_upstream(tmp_path):
    run = nginx_t(tmp_path, "heygem-upstream.compose.conf")
    # `gateway` is a name only Docker's DNS knows: outside Docker nginx parses up to that line and
    # stops there with this one error (the rest of nginx.conf is checked by test_plain_install).
    errors = [line for line in run.stderr.splitlines() if "[emerg]" in line]
    assert run.returncode == 0 or (len(errors) == 1 and errors[0].endswith(
        f'host not found in upstream "gateway:8000" in {tmp_path / "heygem-upstream.conf"}:2')), run.stderr
