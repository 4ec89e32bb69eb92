"""docker-compose.yml kept in step with the code: its settings are real, gateways and workers share
them, its commands exist, secrets have no defaults. No Docker engine runs here, so this reads the
YAML; `docker compose config` runs too where the compose plugin is installed."""
from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import fields
from pathlib import Path

import pytest
import yaml
from flask import Flask

from gateway import cli
from gateway.config import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
REMOTE = ROOT / "deploy" / "compose.remote-workers.yml"
EXAMPLE = ROOT / "deploy" / "compose.env.example"
FILES = (COMPOSE, REMOTE, EXAMPLE)
# ${NAME}, ${NAME:-default}, ${NAME:?message}; $${...} is a literal dollar sign.
REFERENCE = re.compile(r"(?<!\$)\$\{(\w+)(?:(:?[-?])([^}]*))?\}")
SECRET = re.compile(r"PASSWORD|SECRET|AUTH")
# Per-process settings that may differ between a gateway and a worker; all else is shared.
OWN = {"gateway": {"HEYGEM_HOST", "HEYGEM_HTTP_CONNECTIONS_PER_CLIENT"}, "worker": {"HEYGEM_WORKERS"}}


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load(COMPOSE.read_text())


def services_of_image(compose):
    """The services that run this repository's image (`heygem` is its entrypoint)."""
    return {name: spec for name, spec in compose["services"].items() if "build" in spec}


def example_values() -> dict[str, str]:
    lines = [line.strip() for line in EXAMPLE.read_text().splitlines()]
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def test_every_heygem_variable_is_a_setting():
    settings = {"HEYGEM_" + spec.name.upper() for spec in fields(Settings)}
    named = {name for path in FILES for name in re.findall(r"\bHEYGEM_[A-Z0-9_]+", path.read_text())}
    assert named - settings == set()


def test_gateways_and_workers_share_their_settings(compose):
    shared = compose["x-heygem-env"]
    for name, spec in services_of_image(compose).items():
        env = spec["environment"]
        assert {k: v for k, v in env.items() if k not in OWN.get(name, ())} == shared, name
    gateway, worker = compose["services"]["gateway"], compose["services"]["worker"]
    assert gateway["environment"]["HEYGEM_HOST"] == "0.0.0.0"
    assert worker["environment"]["HEYGEM_QUEUE"] == "celery" and worker["environment"]["HEYGEM_STORAGE"] == "s3"
    assert worker["deploy"]["replicas"] == 2
    assert "ports" not in gateway  # scalable: only nginx reaches the gateways


def test_commands_are_heygem_commands(compose, capsys):
    missing = []
    for name, spec in services_of_image(compose).items():
        assert "entrypoint" not in spec, name
        with pytest.raises(SystemExit) as exited:
            cli.main([*spec["command"], "--help"])
        if exited.value.code != 0:
            missing.append(f"{name}: heygem {' '.join(spec['command'])}")
    assert missing == []
    assert {tuple(s["command"]) for s in services_of_image(compose).values()} >= {("serve",), ("worker",)}


def test_gateway_healthcheck_asks_a_real_route(compose):
    from gateway.system import bp

    app = Flask(__name__)
    app.register_blueprint(bp)
    probe = " ".join(compose["services"]["gateway"]["healthcheck"]["test"])
    path = re.search(r"http://127\.0\.0\.1:8000(/\w+)", probe).group(1)
    assert path in {rule.rule for rule in app.url_map.iter_rules()}


def test_nginx_uses_the_shipped_config(compose):
    nginx = compose["services"]["nginx"]
    mounts = {target: (source, options) for source, target, options in
              (volume.split(":") for volume in nginx["volumes"])}
    assert mounts["/etc/nginx/conf.d/default.conf"] == ("./deploy/nginx.conf", "ro")
    upstream, options = mounts["/etc/nginx/heygem-upstream.conf"]
    assert options == "ro" and (ROOT / upstream).read_text().count("server gateway:8000;") == 1
    assert "include heygem-upstream.conf;" in (ROOT / "deploy" / "nginx.conf").read_text()
    assert nginx["ports"] == ["80:80"]


def test_dependencies_are_healthy_or_done(compose):
    services = compose["services"]
    for name, spec in services.items():
        for needed, how in spec.get("depends_on", {}).items():
            if how["condition"] == "service_healthy":
                assert services[needed]["healthcheck"]["test"], f"{name} waits for {needed}'s healthcheck"
            else:  # a one-shot step: it must end, not stay up
                assert how["condition"] == "service_completed_successfully", f"{name} -> {needed}"
                assert services[needed].get("restart", "no") == "no", needed


def required(text: str) -> bool:
    """`text` is exactly one ${NAME:?message}: compose stops when NAME is empty or unset."""
    match = REFERENCE.fullmatch(text)
    return bool(match) and match.group(2) == ":?"


def test_secrets_have_no_defaults(compose):
    for path in (COMPOSE, REMOTE):
        for name, how, _ in REFERENCE.findall(path.read_text()):
            if SECRET.search(name):
                assert how == ":?", f"{path.name}: ${{{name}}} must be ${{{name}:?...}}"
    for service, spec in compose["services"].items():
        for key, value in spec.get("environment", {}).items():
            if SECRET.search(key):
                assert required(value), f"{service}: {key} is not taken from .env"
    for value in compose["x-heygem-env"].values():  # passwords inside URLs
        references = []
        masked = REFERENCE.sub(lambda m: references.append(m.group()) or f"<{len(references) - 1}>", value)
        for password in re.findall(r"://[^/@:]*:([^/@]+)@", masked):
            assert re.fullmatch(r"<\d+>", password) and required(references[int(password[1:-1])]), value
    assert {k: v for k, v in example_values().items() if SECRET.search(k)} == dict.fromkeys(
        ["HEYGEM_JWT_SECRET", "HEYGEM_LINK_SECRET", "POSTGRES_PASSWORD", "REDIS_PASSWORD", "MINIO_ROOT_PASSWORD",
         "HEYGEM_S3_SECRET_KEY"], "")


def test_the_example_env_documents_every_variable():
    used = {name for path in (COMPOSE, REMOTE) for name, _, _ in REFERENCE.findall(path.read_text())}
    assert used == set(example_values())
    assert "version" not in yaml.safe_load(COMPOSE.read_text())  # the Compose specification has none


def compose_plugin() -> bool:
    docker = shutil.which("docker")
    return bool(docker) and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0


@pytest.mark.skipif(not compose_plugin(), reason="`docker compose` is not installed (the docker client alone "
                    "does not parse compose files; the pip `docker-compose` 1.x is end-of-life and does not "
                    "install on Python 3.11)")
def test_docker_compose_config(tmp_path):
    filled = {k: v or f"value-of-{k.lower().replace('_', '-')}" for k, v in example_values().items()}
    env = tmp_path / ".env"
    env.write_text("".join(f"{k}={v}\n" for k, v in filled.items()))
    files = ["-f", str(COMPOSE), "-f", str(REMOTE)]
    run = subprocess.run(["docker", "compose", "--project-directory", str(ROOT), *files, "--env-file", str(env),
                          "config", "--quiet"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    # The example as shipped must not start: its secrets are empty.
    run = subprocess.run(["docker", "compose", "--project-directory", str(ROOT), *files, "--env-file",
                          str(EXAMPLE), "config", "--quiet"], capture_output=True, text=True)
    assert run.returncode != 0 and "set it in .env" in run.stderr
