"""Bearer JWTs: who is calling (the tenant) and what they may do (scopes).

The accepted algorithm is fixed by configuration (HS256 with the shared secret, or RS256 with a
public key), so `alg: none` and HS/RS confusion are refused by PyJWT itself; `exp`, `iss` and
`aud` are required, `nbf` is honoured, and revoked `jti`s are refused."""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from functools import wraps

import jwt
from flask import current_app, g, request

from .problems import Problem

SCOPES = ("jobs:read", "jobs:write")


@dataclass(frozen=True)
class Principal:
    tenant: str
    scopes: frozenset[str]
    jti: str | None


def _verification_key(settings) -> tuple[str, str]:
    if settings.jwt_public_key_file:
        with open(settings.jwt_public_key_file) as handle:
            return handle.read(), "RS256"
    return settings.jwt_secret, "HS256"


def create_token(settings, tenant: str, scopes: list[str], ttl_seconds: float) -> tuple[str, str]:
    """(token, jti) signed with the shared secret."""
    if settings.jwt_public_key_file:
        raise ValueError("tokens are verified with an RS256 public key here; issue them where the private key is")
    now = int(time.time())
    jti = uuid.uuid4().hex
    claims = {"sub": tenant, "tenant": tenant, "scope": " ".join(scopes), "iss": settings.jwt_issuer,
              "aud": settings.jwt_audience, "iat": now, "nbf": now, "exp": now + int(ttl_seconds), "jti": jti}
    return jwt.encode(claims, settings.jwt_secret, algorithm="HS256"), jti


def authenticate() -> Principal:
    settings, store = current_app.config["SETTINGS"], current_app.extensions["store"]
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    challenge = {"WWW-Authenticate": 'Bearer realm="heygem"'}
    if scheme.lower() != "bearer" or not token.strip():
        raise Problem(401, "send 'Authorization: Bearer <JWT>' (make one with `heygem token create`)", challenge)
    key, algorithm = _verification_key(settings)
    try:
        claims = jwt.decode(token.strip(), key, algorithms=[algorithm], audience=settings.jwt_audience,
                            issuer=settings.jwt_issuer, options={"require": ["exp", "iss", "aud"]}, leeway=5)
    except jwt.ExpiredSignatureError:
        raise Problem(401, "the token has expired; ask for a new one", challenge)
    except jwt.ImmatureSignatureError:
        raise Problem(401, "the token is not valid yet (nbf)", challenge)
    except jwt.InvalidAudienceError:
        raise Problem(401, f"the token is not for this service (aud must be {settings.jwt_audience!r})", challenge)
    except jwt.InvalidIssuerError:
        raise Problem(401, f"the token's issuer is not trusted (iss must be {settings.jwt_issuer!r})", challenge)
    except jwt.PyJWTError as exc:
        raise Problem(401, f"the token is not valid: {exc}", challenge)
    jti = claims.get("jti")
    if jti and store.is_revoked(jti):
        raise Problem(401, "the token has been revoked", challenge)
    tenant = claims.get("tenant") or claims.get("sub")
    if not tenant or not isinstance(tenant, str):
        raise Problem(401, "the token names no tenant (a 'tenant' or 'sub' claim)", challenge)
    scope = claims.get("scope", claims.get("scp", ""))
    scopes = frozenset(scope.split() if isinstance(scope, str) else scope)
    return Principal(tenant, scopes, jti)


def require(scope: str):
    """Route decorator: a valid token carrying `scope`; the caller is in `g.principal`."""
    def decorate(view):
        @wraps(view)
        def wrapped(*args, **kwargs):
            principal = authenticate()
            if scope not in principal.scopes:
                raise Problem(403, f"the token lacks the '{scope}' scope")
            g.principal = principal
            return view(*args, **kwargs)
        return wrapped
    return decorate
