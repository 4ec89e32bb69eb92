"""Settings from the environment (HEYGEM_*), with defaults that run on one machine with nothing
else installed: SQLite, the local filesystem and worker threads in the service's process."""
from __future__ import annotations

import os
import re
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


ENGINES = ("embedded", "heygem-easy", "gradio")
BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


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
    database_url: str = ""                 # postgresql://user:password@host:5432/db (default: SQLite in data_dir)
    outputs_dir: str = ""                  # default: <data_dir>/outputs
    host: str = "127.0.0.1"
    port: int = 8000
    public_url: str = ""                   # base of the links handed out; default: the request's
    jwt_secret: str = ""                   # HS256 shared secret (default: generated, see _secret)
    jwt_public_key_file: str = ""          # RS256 instead: PEM public key that verifies tokens
    jwt_issuer: str = "heygem-gateway"
    jwt_audience: str = "heygem-api"
    workers: int = 1                       # items rendered at once (0: an external engine renders)
    # How often a rendering item writes its progress (and reads its job's cancel flag). Each
    # rendering item costs the database 1/this writes a second: the first limit of a large
    # cluster (benchmarks/scale.py).
    progress_seconds: float = 0.5
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
    # Where finished videos and ZIPs are kept: `local` (served by /download links) or `s3` (MinIO
    # or any S3: the job's links are the bucket's).
    storage: str = "local"
    s3_endpoint: str = ""                  # host:port, or http(s)://host:port
    s3_access_key: str = ""
    s3_secret_key: str = ""
    s3_secret_key_file: str = ""           # read the secret key from this file instead
    s3_bucket: str = "heygem"
    s3_region: str = "us-east-1"           # set, so that signing links never asks the server
    s3_secure: bool = True                 # TLS to the endpoint (an http:// endpoint turns it off)
    s3_ca_bundle: str = ""                 # PEM CA certificates for the endpoint (default: certifi's)
    s3_prefix: str = "heygem"              # object keys: <prefix>/<tenant>/<job>/output_001.mp4
    s3_links: str = "presigned"            # presigned | public
    s3_link_ttl: int = 7 * 86400           # seconds a presigned link stays valid (S3 allows 7 days at most)
    s3_public_url: str = ""                # links: base URL of a public-read bucket or a CDN (public mode),
                                           # or the endpoint as users reach it (presigned mode)
    s3_part_mb: int = 16                   # multipart upload part size (S3: 5 MB at least)
    s3_keep_local: bool = False            # keep the local copy of what was uploaded
    storage_retry_hours: float = 24.0      # a failing upload is retried this long, then its item fails
    storage_backoff_max_seconds: float = 300.0  # longest wait between upload attempts (from 2 s, doubling)
    # Result callbacks: an outbox in the database, retried with backoff on errors, 5xx and 429.
    callback_retry_hours: float = 24.0
    callback_backoff_seconds: float = 10.0  # the first retry's delay; it doubles (with jitter)
    callback_backoff_max_seconds: float = 3600.0
    callback_timeout: float = 15.0         # seconds to connect and to wait for the receiver's answer
    callback_concurrency: int = 4          # deliveries in flight at once
    max_deliveries_per_job: int = 20       # a job's callback deliveries, redeliveries included
    # What renders the items: `embedded` (this machine's CPU engine), `heygem-easy` (a Duix.Heygem
    # video service, its /easy/submit API) or `gradio` (a HeyGem Gradio WebUI). `workers` items are
    # sent at once; HeyGem's video service runs one at a time, so keep 1 for it.
    engine: str = "embedded"
    engine_url: str = ""                   # the remote engine's base URL, e.g. http://gpu-box:8383
    # heygem-easy: how files reach it and come back. A folder both machines see (ours: this path;
    # HeyGem's: /code/data), or else URLs: the gateway serves the inputs by short signed links and
    # fetches the result from engine_result_url (HeyGem's /code/data served over HTTP).
    engine_shared_dir: str = ""
    engine_result_url: str = ""
    engine_input_link_ttl: int = 900       # seconds a link to an input stays valid
    # gradio: the function to call and its arguments in order: `audio` and `video` name the
    # files, anything else is a JSON value passed as it is (e.g. audio,video,false).
    engine_api_name: str = "/predict"
    engine_args: str = "audio,video"
    engine_poll_seconds: float = 1.0       # first wait between status queries; it grows 1.5x to the max
    engine_poll_max_seconds: float = 5.0
    engine_stall_seconds: float = 900.0    # a remote task whose progress does not move this long fails
    engine_unreachable_seconds: float = 600.0  # a remote engine that does not answer this long fails the item
    engine_max_resubmits: int = 3          # a task the engine forgot (restarted) is sent again this often
    # /easy/submit and /easy/query (HeyGem's own API, for its clients): also accept the token as
    # ?token=... for clients that cannot send an Authorization header (it then shows in URLs).
    easy_token_in_query: bool = False
    # Scale-out (README "Scaling out"): `threads` renders in this process (the default); `celery`
    # sends each item as a Celery task through Redis to `heygem worker` processes on any machine,
    # with the state in PostgreSQL and every file in object storage (HEYGEM_STORAGE=s3).
    queue: str = "threads"
    broker_url: str = ""                   # redis://host:6379/0
    visibility_timeout: int = 21600        # seconds Redis holds an unacknowledged task before another worker gets it
    worker_lost_seconds: float = 60.0      # a claimed item whose worker has been silent this long is run again
    heartbeat_seconds: float = 10.0        # how often a worker says it is alive
    dispatch_check_seconds: float = 15.0   # how often the gateway checks the broker still holds every sent item
    max_attempts: int = 3                  # an item whose worker went silent this many times fails

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
            elif spec.type == "bool":
                if raw.strip().lower() not in BOOLEANS:
                    raise ValueError(f"{name} must be true or false, not {raw!r}")
                values[spec.name] = BOOLEANS[raw.strip().lower()]
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
        settings._check_storage()
        settings._check_engine()
        settings._check_queue()
        return settings

    def _check_queue(self) -> None:
        if self.queue not in ("threads", "celery"):
            raise ValueError(f"HEYGEM_QUEUE must be threads or celery, not {self.queue!r}")
        if self.queue != "celery":
            return
        if not self.database_url.startswith(("postgresql://", "postgres://", "postgresql+psycopg://")):
            raise ValueError("HEYGEM_QUEUE=celery needs HEYGEM_DATABASE_URL (postgresql://user:password@host/db): "
                             "gateways and workers share one database")
        if not re.match(r"rediss?://", self.broker_url):
            raise ValueError("HEYGEM_QUEUE=celery needs HEYGEM_BROKER_URL (redis://host:6379/0)")
        if self.engine == "heygem-easy" and not self.engine_shared_dir:
            raise ValueError("HEYGEM_QUEUE=celery with HEYGEM_ENGINE=heygem-easy needs HEYGEM_ENGINE_SHARED_DIR: the "
                             "worker runs beside its HeyGem and hands it files through that folder")
        if self.storage != "s3":
            raise ValueError("HEYGEM_QUEUE=celery needs HEYGEM_STORAGE=s3: workers on other machines read the "
                             "inputs from, and put the videos in, object storage")
        if not self.heartbeat_seconds * 2 <= self.worker_lost_seconds < self.visibility_timeout:
            raise ValueError("HEYGEM_WORKER_LOST_SECONDS must be at least twice HEYGEM_HEARTBEAT_SECONDS and less "
                             "than HEYGEM_VISIBILITY_TIMEOUT")

    @property
    def render_queue(self) -> str:
        """The Celery queue of this engine's items: workers with another engine take other queues."""
        return "render." + self.engine

    def _check_engine(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"HEYGEM_ENGINE must be one of {', '.join(ENGINES)}, not {self.engine!r}")
        if self.engine == "embedded":
            return
        if not re.match(r"https?://", self.engine_url):
            raise ValueError(f"HEYGEM_ENGINE={self.engine} needs HEYGEM_ENGINE_URL (http(s)://host:port)")
        if self.engine == "heygem-easy" and not (self.engine_shared_dir or self.engine_result_url):
            raise ValueError("HEYGEM_ENGINE=heygem-easy needs HEYGEM_ENGINE_SHARED_DIR (the folder HeyGem has at "
                             "/code/data, as this machine sees it) or HEYGEM_ENGINE_RESULT_URL (that folder served "
                             "over HTTP) to fetch its results")
        if self.engine_shared_dir:
            self.engine_shared_dir = os.path.abspath(self.engine_shared_dir)
        if self.engine == "gradio":
            names = [a.strip() for a in self.engine_args.split(",")]
            if sorted(n for n in names if n in ("audio", "video")) != ["audio", "video"]:
                raise ValueError("HEYGEM_ENGINE_ARGS must name audio and video once each, e.g. audio,video")

    def _check_storage(self) -> None:
        if self.storage not in ("local", "s3"):
            raise ValueError(f"HEYGEM_STORAGE must be local or s3, not {self.storage!r}")
        if self.storage != "s3":
            return
        if self.s3_secret_key_file:
            with open(self.s3_secret_key_file) as handle:
                self.s3_secret_key = handle.read().strip()
        missing = [f"HEYGEM_{n.upper()}" for n in ("s3_endpoint", "s3_access_key", "s3_secret_key", "s3_bucket")
                   if not getattr(self, n)]
        if missing:
            raise ValueError(f"HEYGEM_STORAGE=s3 needs {', '.join(missing)}")
        if self.s3_links not in ("presigned", "public"):
            raise ValueError(f"HEYGEM_S3_LINKS must be presigned or public, not {self.s3_links!r}")
        if self.s3_links == "public" and not self.s3_public_url:
            raise ValueError("HEYGEM_S3_LINKS=public needs HEYGEM_S3_PUBLIC_URL (the bucket's or CDN's base URL)")
        if not 1 <= self.s3_link_ttl <= 7 * 86400:
            raise ValueError("HEYGEM_S3_LINK_TTL must be 1 to 604800 seconds (S3 signs links for 7 days at most)")
        if self.s3_part_mb < 5:
            raise ValueError("HEYGEM_S3_PART_MB must be at least 5 (S3's smallest multipart part)")
        if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", self.s3_bucket):
            raise ValueError(f"HEYGEM_S3_BUCKET {self.s3_bucket!r} is not a valid bucket name")
        self.s3_prefix = self.s3_prefix.strip("/")

    @property
    def engine_limits(self) -> Limits:
        return Limits(self.max_pixels, self.max_template_seconds, self.max_audio_seconds)

    @property
    def database(self) -> str:
        return under(self.data_dir, "gateway.sqlite3")
