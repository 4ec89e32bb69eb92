"""`heygem`: the engine's commands plus `serve`, `token` and `tenant`."""
from __future__ import annotations

import argparse
import re
import sys

from engine import cli as engine_cli

from .config import Settings

TTL_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _ttl(text: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd]?)", text.strip())
    if not match:
        raise argparse.ArgumentTypeError("a duration such as 3600, 90m, 12h or 365d")
    return float(match.group(1)) * TTL_UNITS[match.group(2) or "s"]


def _serve(args) -> int:
    from prometheus_client import start_http_server

    from . import create_app
    from .edge import make_server

    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    settings = Settings.from_env(**overrides)
    app = create_app(settings)
    server = make_server(app, settings.host, settings.port)
    if settings.metrics_listen:  # a separate listener for Prometheus, e.g. on a private address
        host, _, port = settings.metrics_listen.rpartition(":")
        start_http_server(int(port), host.strip("[]") or "127.0.0.1", registry=app.extensions["registry"])
    print(f"heygem-gateway on http://{settings.host}:{settings.port} (data in {settings.data_dir}); "
          f"the console is at http://{settings.host}:{settings.port}/", flush=True)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
        app.extensions["workers"].shutdown()
    return 0


def _worker(args) -> int:
    from .tasks import run_worker

    settings = Settings.from_env()
    if settings.queue != "celery":
        print("error: a render worker needs HEYGEM_QUEUE=celery (and HEYGEM_BROKER_URL, HEYGEM_DATABASE_URL, "
              "HEYGEM_STORAGE=s3, the same as the gateway's)", file=sys.stderr)
        return 2
    return run_worker(settings)


def _db_upgrade(args) -> int:
    from .database import Database, url_from

    Database(url_from(Settings.from_env())).migrate()
    print("the database schema is up to date")
    return 0


def _token_create(args) -> int:
    from .auth import create_token

    try:
        token, jti = create_token(Settings.from_env(), args.tenant, args.scope or ["jobs:read", "jobs:write"], args.ttl)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(token)
    print(f"jti {jti} (revoke with: heygem token revoke {jti})", file=sys.stderr)
    return 0


def _token_revoke(args) -> int:
    from .database import url_from
    from .store import Store

    Store(url_from(Settings.from_env())).revoke(args.jti)
    print(f"revoked {args.jti}")
    return 0


def _tenant_secret(args) -> int:
    from .auth import TENANT, TENANT_RULE
    from .database import url_from
    from .store import Store

    if not TENANT.fullmatch(args.tenant):
        print(f"error: tenant {args.tenant!r}: {TENANT_RULE}", file=sys.stderr)
        return 2
    secret, _, _ = Store(url_from(Settings.from_env())).signing_secret(args.tenant, rotate=args.rotate)
    print(secret)
    if args.rotate:
        print("rotated: callbacks are signed with the old secret as well for 24 hours", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="heygem", description="Lip-sync narrations onto presenter templates, "
                                     "from the command line or as a service.")
    commands = parser.add_subparsers(dest="command", required=True)
    engine_cli.add_commands(commands)
    serve = commands.add_parser("serve", help="run the HTTP service with its worker threads")
    serve.add_argument("--host", help="default HEYGEM_HOST or 127.0.0.1")
    serve.add_argument("--port", type=int, help="default HEYGEM_PORT or 8000")
    serve.set_defaults(handler=_serve)
    worker = commands.add_parser("worker", help="render items sent by the gateways (HEYGEM_QUEUE=celery)")
    worker.set_defaults(handler=_worker)
    db = commands.add_parser("db", help="the database").add_subparsers(dest="action", required=True)
    db.add_parser("upgrade", help="apply the schema's migrations (the gateway also does at start)").set_defaults(
        handler=_db_upgrade)
    token = commands.add_parser("token", help="issue or revoke API tokens").add_subparsers(dest="action", required=True)
    create = token.add_parser("create", help="print a signed JWT for a tenant")
    create.add_argument("--tenant", required=True)
    create.add_argument("--scope", action="append", default=[],
                        help="jobs:read, jobs:write (default: both), metrics:read (for Prometheus)")
    create.add_argument("--ttl", type=_ttl, default=_ttl("365d"), help="lifetime, e.g. 12h or 365d (default 365d)")
    create.set_defaults(handler=_token_create)
    revoke = token.add_parser("revoke", help="refuse a token from now on")
    revoke.add_argument("jti")
    revoke.set_defaults(handler=_token_revoke)
    tenant = commands.add_parser("tenant", help="per-tenant settings").add_subparsers(dest="action", required=True)
    secret = tenant.add_parser("secret", help="print (or rotate) the secret that signs a tenant's callbacks")
    secret.add_argument("tenant")
    secret.add_argument("--rotate", action="store_true", help="make a new secret")
    secret.set_defaults(handler=_tenant_secret)
    args = parser.parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
