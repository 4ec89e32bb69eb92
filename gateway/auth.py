"""Bearer JWTs: who is calling (the tenant) and what they may do (scopes).

The accepted algorithm is fixed by configuration (HS256 with the shared secret, or RS256 with a
public key), so `alg: none` and HS/RS confusion are refused by PyJWT itself; `exp`, `iss` and
`aud` are required, `nbf` is honoured, and revoked `jti`s are refused."""
from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass
from functools import wraps
from urllib.parse import parse_qs

import jwt
from flask import current_app, g, request

from .problems import Problem

SCOPES = ("jobs:read", "jobs:write", "metrics:read")
# Tenants name folders (outputs/<tenant>/...): plain names only.
TENANT = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}")
TENANT_RULE = "1-64 letters, digits, '.', '_' or '-', not starting with '.'"
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="heygem"'}


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
    if not TENANT.fullmatch(tenant):
        raise ValueError(f"tenant {tenant!r}: {TENANT_RULE}")
    unknown = set(scopes) - set(SCOPES)
    if unknown:
        raise ValueError(f"unknown scope {', '.join(sorted(unknown))}; known: {', '.join(SCOPES)}")
    now = int(time.time())
    jti = uuid.uuid4().hex
    claims = {"sub": tenant, "tenant": tenant, "scope": " ".join(scopes), "iss": settings.jwt_issuer,
              "aud": settings.jwt_audience, "iat": now, "nbf": now, "exp": now + int(ttl_seconds), "jti": jti}
    return jwt.encode(claims, settings.jwt_secret, algorithm="HS256"), jti


def verify(header: str, settings, store) -> Principal:
    """The caller named by an `Authorization` header's bearer token; Problem 401 otherwise."""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Problem(401, "send 'Authorization: Bearer <JWT>' (make one with `heygem token create`)", CHALLENGE)
    key, algorithm = _verification_key(settings)
    try:
        claims = jwt.decode(token.strip(), key, algorithms=[algorithm], audience=settings.jwt_audience,
                            issuer=settings.jwt_issuer, options={"require": ["exp", "iss", "aud"]}, leeway=5)
    except jwt.ExpiredSignatureError:
        raise Problem(401, "the token has expired; ask for a new one", CHALLENGE)
    except jwt.ImmatureSignatureError:
        raise Problem(401, "the token is not valid yet (nbf)", CHALLENGE)
    except jwt.InvalidAudienceError:
        raise Problem(401, f"the token is not for this service (aud must be {settings.jwt_audience!r})", CHALLENGE)
    except jwt.InvalidIssuerError:
        raise Problem(401, f"the token's issuer is not trusted (iss must be {settings.jwt_issuer!r})", CHALLENGE)
    except jwt.PyJWTError as exc:
        raise Problem(401, f"the token is not valid: {exc}", CHALLENGE)
    jti = claims.get("jti")
    if jti is not None and not isinstance(jti, str):
        raise Problem(401, "the token's 'jti' claim must be a string", CHALLENGE)
    if jti and store.is_revoked(jti):
        raise Problem(401, "the token has been revoked", CHALLENGE)
    tenant = claims.get("tenant") or claims.get("sub")
    if not isinstance(tenant, str) or not TENANT.fullmatch(tenant):
        raise Problem(401, f"the token's tenant ('tenant' or 'sub' claim) must be {TENANT_RULE}", CHALLENGE)
    scope = claims.get("scope", claims.get("scp", ""))
    scopes = scope.split() if isinstance(scope, str) else scope
    if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
        raise Problem(401, "the token's 'scope' claim must be a space-separated string or a list of strings", CHALLENGE)
    return Principal(tenant, frozenset(scopes), jti)


def token_in_query(view):
    """Marks a view whose callers may send the token as `?token=` instead of a header, when
    HEYGEM_EASY_TOKEN_IN_QUERY allows it (HeyGem's clients cannot add headers)."""
    view.token_in_query = True
    return view


def authorization(view, header: str, query: str | bytes, settings) -> str:
    """The Authorization header to check: the request's, or one made of `?token=` on the views
    that allow it."""
    if header or not (settings.easy_token_in_query and getattr(view, "token_in_query", False)):
        return header
    if isinstance(query, bytes):
        query = query.decode("latin-1")
    tokens = parse_qs(query).get("token")
    return f"Bearer {tokens[0]}" if tokens else ""


def authenticate(view=None) -> Principal:
    settings = current_app.config["SETTINGS"]
    header = authorization(view, request.headers.get("Authorization", ""), request.query_string, settings)
    return verify(header, settings, current_app.extensions["store"])


def authorize(principal: Principal, scope: str) -> None:
    if scope not in principal.scopes:
        raise Problem(403, f"the token lacks the '{scope}' scope")


def require(scope: str):
    """Route decorator: a valid token carrying `scope`; the caller is in `g.principal`. The scope
    is kept on the view, so the server's edge can ask for it before reading a request's body."""
    def decorate(view):
        @wraps(view)
        def wrapped(*args, **kwargs):
            principal = authenticate(view)
            authorize(principal, scope)
            g.principal = principal
            return view(*args, **kwargs)
        wrapped.required_scope = scope
        return wrapped
    return decorate
