"""Settings from the environment (HEYGEM_*), with defaults that run on one machine with nothing
else installed: SQLite, the local filesystem and worker threads in the service's process."""
from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field, fields


def _secret(data_dir: str) -> str:
    """The HS256 secret: HEYGEM_JWT_SECRET, else one made on first start and kept in the data
    directory, so that `heygem token create` and `heygem serve` agree without setup."""
    path = os.path.join(data_dir, "jwt-secret")
    if not os.path.exists(path):
        os.makedirs(data_dir, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48))
    with open(path) as handle:
        return handle.read().strip()


def _read_config_file(path: str) -> dict[str, str]:
    values = {}
    with open(path) as handle:
        for number, line in enumerate(handle, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            key, sep, value = line.partition("=")
            if not sep or not key.strip().startswith("HEYGEM_"):
                raise ValueError(f"{path}:{number}: expected HEYGEM_NAME=value")
            values[key.strip()] = value.strip().strip('"')
    return values


@dataclass
class Settings:
    data_dir: str = "data"                 # SQLite database, downloads, secret
    outputs_dir: str = ""                  # default: <data_dir>/outputs
    host: str = "127.0.0.1"
    port: int = 8000
    public_url: str = ""                   # base of the links handed out; default: the request's
    jwt_secret: str = ""                   # HS256 shared secret (default: generated, see _secret)
    jwt_public_key_file: str = ""          # RS256 instead: PEM public key that verifies tokens
    jwt_issuer: str = "heygem-gateway"
    jwt_audience: str = "heygem-api"
    workers: int = 1                       # items rendered at once (0: an external engine renders)
    queue_limit: int = 200                 # items waiting; beyond it new jobs get 429
    max_templates: int = 50
    max_download_mb: int = 500
    download_timeout: float = 60.0         # seconds without data before a download fails
    allowed_hosts: list[str] = field(default_factory=list)  # in-house hosts exempt from the SSRF guard
    link_ttl: int = 3600                   # seconds a /download link stays valid
    accel_redirect_prefix: str = ""        # e.g. /protected/ to let nginx send files (X-Accel-Redirect)
    retention_days: float = 7.0
    min_free_mb: int = 1024                # new jobs get 503 below this much free disk
    log_file: str = ""                     # default: <data_dir>/gateway.log
    link_secret: str = ""                  # signs /download links (default: the HS256 secret)

    @classmethod
    def from_env(cls, env: dict | None = None, **overrides) -> "Settings":
        """Settings from HEYGEM_* variables; HEYGEM_CONFIG may name a file of the same
        `HEYGEM_NAME=value` lines (# comments allowed), which the environment overrides."""
        env = dict(os.environ if env is None else env)
        if env.get("HEYGEM_CONFIG"):
            env = {**_read_config_file(env["HEYGEM_CONFIG"]), **env}
        values = {}
        for spec in fields(cls):
            raw = env.get("HEYGEM_" + spec.name.upper())
            if raw is None:
                continue
            if spec.type in ("int",):
                values[spec.name] = int(raw)
            elif spec.type in ("float",):
                values[spec.name] = float(raw)
            elif spec.name == "allowed_hosts":
                values[spec.name] = [h.strip().lower() for h in raw.split(",") if h.strip()]
            else:
                values[spec.name] = raw
        values.update(overrides)
        settings = cls(**values)
        settings.data_dir = os.path.abspath(settings.data_dir)
        settings.outputs_dir = os.path.abspath(settings.outputs_dir or os.path.join(settings.data_dir, "outputs"))
        settings.log_file = settings.log_file or os.path.join(settings.data_dir, "gateway.log")
        if not settings.jwt_secret and not settings.jwt_public_key_file:
            settings.jwt_secret = _secret(settings.data_dir)
        settings.link_secret = settings.link_secret or settings.jwt_secret or _secret(settings.data_dir)
        return settings

    @property
    def database(self) -> str:
        return os.path.join(self.data_dir, "gateway.sqlite3")
