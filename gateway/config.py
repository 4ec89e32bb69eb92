"""Settings from the environment (HEYGEM_*), with defaults that run on one machine with nothing
else installed: SQLite, the local filesystem and worker threads in the service's process."""
from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field, fields

from engine.media import Limits

from .paths import under


def _secret(data_dir: str, name: str) -> str:
    """A secret made on first start and kept in the data directory (`jwt-secret`, `link-secret`),
    so that `heygem token create` and `heygem serve` agree without setup."""
    path = under(data_dir, name)
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
    tenant_queue_limit: int = 100          # items one tenant may have waiting
    max_templates: int = 50
    max_download_mb: int = 500             # per remote file
    download_timeout: float = 60.0         # seconds without data before a download fails
    download_max_seconds: float = 900.0    # a whole download, however slowly it trickles
    # In-house servers exempt from the internal-address rule: host, host:port, CIDR or CIDR:port
    # (without a port: 80 and 443 only).
    allowed_hosts: list[str] = field(default_factory=list)
    ca_bundle: str = ""                    # PEM CA certificates for https downloads (default: certifi's)
    max_url_length: int = 2048
    max_upload_mb: int = 500               # body of a request that uploads a narration or template
    max_json_kb: int = 1024                # body of any other request
    max_json_depth: int = 32               # nesting of JSON bodies
    max_metadata_kb: int = 16              # a job's `metadata`, as JSON
    max_pixels: int = 4096 * 4096          # per template picture (4K UHD is 8.3 MP)
    max_template_seconds: float = 600.0
    max_audio_seconds: float = 1800.0
    max_waiters: int = 8                   # submits waiting (wait_seconds) at once; more answer 202 at once
    max_analyses: int = 2                  # template uploads analysed at once; more get 503
    http_threads: int = 16                 # requests handled at once by `heygem serve`
    http_connection_limit: int = 4000      # open connections; beyond it new ones wait in the backlog
    http_idle_timeout: int = 30            # seconds a connection may stay silent
    http_header_timeout: int = 20          # seconds from a request's first byte to the end of its headers
    http_connections_per_client: int = 100  # per client address or IPv6 /64 (0: no limit; behind a proxy)
    http_min_body_rate: int = 16384        # bytes/s a request body must average after its first 10 s
    max_uploads_per_tenant: int = 32       # request bodies one tenant may be sending at once
    link_ttl: int = 3600                   # seconds a /download link stays valid
    accel_redirect_prefix: str = ""        # e.g. /protected/ to let nginx send files (X-Accel-Redirect)
    retention_days: float = 7.0
    min_free_mb: int = 1024                # new jobs get 503 below this much free disk
    log_file: str = ""                     # default: <data_dir>/gateway.log
    link_secret: str = ""                  # signs /download links (default: generated, like the JWT secret)
    metrics_listen: str = ""               # host:port: serve /metrics there without a token as well

    @classmethod
    def from_env(cls, env: dict | None = None, **overrides) -> "Settings":
        """Settings from HEYGEM_* variables; HEYGEM_CONFIG may name a file of the same
        `HEYGEM_NAME=value` lines (# comments allowed), which the environment overrides."""
        env = dict(os.environ if env is None else env)
        if env.get("HEYGEM_CONFIG"):
            env = {**_read_config_file(env["HEYGEM_CONFIG"]), **env}
        values = {}
        for spec in fields(cls):
            name = "HEYGEM_" + spec.name.upper()
            raw = env.get(name)
            if raw is None:
                continue
            if spec.type in ("int", "float"):
                try:
                    values[spec.name] = int(raw) if spec.type == "int" else float(raw)
                except ValueError:
                    raise ValueError(f"{name} must be a number, not {raw!r}") from None
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
            settings.jwt_secret = _secret(settings.data_dir, "jwt-secret")
        # Links are their own secret: whoever can verify tokens need not be able to mint links.
        settings.link_secret = settings.link_secret or _secret(settings.data_dir, "link-secret")
        return settings

    @property
    def engine_limits(self) -> Limits:
        return Limits(self.max_pixels, self.max_template_seconds, self.max_audio_seconds)

    @property
    def database(self) -> str:
        return under(self.data_dir, "gateway.sqlite3")
