"""Who is calling: AUTH_MODE=none | api_key | jwt.

One middleware covers every route under ``/api/``, ``/a2a`` and ``/mcp`` (and the docs with AUTH_PROTECT_DOCS), so a
route added later is protected without touching this module. It reads one credential
(``Authorization: Bearer <credential>`` or ``X-API-Key: <key>``), resolves it to a
:class:`Principal` and binds it to the request; handlers then take their tenant from
:func:`msev15.handlers.tenancy.request_tenant`, never from a request field directly.

Refusals are a 401 envelope ``unauthorized`` with ``WWW-Authenticate: Bearer``, the same for a
missing, malformed, unknown, revoked or expired credential. Failed attempts are counted per
client IP (AUTH_MAX_FAILURES_PER_MINUTE); past the limit the IP gets 429 without its credential
being looked at. No credential is ever written to a log line: the log names the reason and, for
API keys, at most the key id.

API key lookups are cached for API_KEYS_CACHE_SECONDS (at most 5 s), keyed by the key's digest,
so a revoked key is refused by every instance sharing the store within that time.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol

from aiohttp import web
from aiohttp.typedefs import Handler

from msev15.common.roles import DEFAULT_ROLE
from msev15.config import SETTINGS, Settings
from msev15.handlers.errors import ApiError
from msev15.handlers.jwt_auth import InvalidToken, JwtVerifier
from msev15.handlers.route_roles import check_route_role
from msev15.store.apikeys import ApiKey, ApiKeyStore, digest, key_id
from msev15.store.auth_limits import FailureLimit, LocalFailureLimit
from msev15.topology import TOPOLOGY

log = logging.getLogger("api.auth")

DOCS_PATHS = ("/docs", "/redoc", "/openapi.json")
CACHE_MAX = 10_000


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller. ``subject`` is the API key's id or the token's ``sub``; ``role``
    is what it may do (msev15.common.roles); ``name`` is how an operator is shown (the key's name,
    else its id; the token's ``sub``)."""

    tenant_id: str
    kind: str
    subject: str
    role: str = DEFAULT_ROLE
    name: str = ""


PRINCIPAL = web.RequestKey("msev15.principal", Principal)


class Unauthorized(Exception):
    """A refused credential; the message is a reason safe to log (never the credential)."""


class Authenticator(Protocol):
    async def authenticate(self, credential: str) -> Principal: ...

    async def close(self) -> None: ...


class ApiKeyAuthenticator:
    """Keys from an :class:`ApiKeyStore`, each lookup (found or not) cached for ``ttl`` seconds."""

    def __init__(self, store: ApiKeyStore, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.ttl = ttl
        self._clock = clock
        self._cache: OrderedDict[str, tuple[float, ApiKey | None]] = OrderedDict()

    async def authenticate(self, credential: str) -> Principal:
        if key_id(credential) is None:
            raise Unauthorized("not an API key")
        cache_key, now = digest(credential), self._clock()
        hit = self._cache.get(cache_key)
        if hit is not None and hit[0] > now:
            record = hit[1]
        else:
            record = await self.store.verify(credential)
            if self.ttl > 0:
                self._cache[cache_key] = (now + self.ttl, record)
                self._cache.move_to_end(cache_key)
                while len(self._cache) > CACHE_MAX:
                    self._cache.popitem(last=False)
        if record is None:
            raise Unauthorized(f"unknown or revoked API key {key_id(credential)}")
        return Principal(record.tenant_id, "api_key", record.id, record.role, record.name or record.id)

    async def close(self) -> None:
        await self.store.close()


class JwtAuthenticator:
    def __init__(self, verifier: JwtVerifier) -> None:
        self.verifier = verifier

    async def authenticate(self, credential: str) -> Principal:
        try:
            tenant, subject, role = await self.verifier.verify_with_role(credential)
        except InvalidToken as exc:
            raise Unauthorized(str(exc)) from None
        return Principal(tenant, "jwt", subject, role, subject)

    async def close(self) -> None:
        await self.verifier.close()


def make_authenticator(settings: Settings, key_store: Callable[[], ApiKeyStore]) -> Authenticator | None:
    if settings.auth_mode == "api_key":
        return ApiKeyAuthenticator(key_store(), settings.api_keys_cache_seconds)
    if settings.auth_mode == "jwt":
        return JwtAuthenticator(JwtVerifier(
            issuer=settings.jwt_issuer, audience=settings.jwt_audience, tenant_claim=settings.jwt_tenant_claim,
            jwks_url=settings.jwt_jwks_url, public_key_file=settings.jwt_public_key_file,
            max_lifetime=settings.jwt_max_lifetime_seconds, roles_claim=settings.jwt_roles_claim))
    return None


AUTHENTICATOR: web.AppKey[Authenticator] = web.AppKey("msev15.authenticator")


async def auth_ctx(app: web.Application) -> AsyncIterator[None]:
    authenticator = make_authenticator(app[SETTINGS], app[TOPOLOGY].api_key_store)
    if authenticator is not None:
        app[AUTHENTICATOR] = authenticator
    yield
    if authenticator is not None:
        await authenticator.close()


def credential(request: web.Request) -> str:
    """The one credential the request carries; Unauthorized when there is none or it is malformed."""
    header = request.headers.get("Authorization")
    if header is not None and "X-API-Key" in request.headers:
        # Two credentials: which one a proxy checked and which one we would use could differ.
        raise Unauthorized("two credentials (Authorization and X-API-Key): send one")
    if header is not None:
        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Unauthorized("malformed Authorization header (expected 'Bearer <credential>')")
        return value.strip()
    api_key = request.headers.get("X-API-Key", "").strip()
    if not api_key:
        raise Unauthorized("no credential")
    return api_key


def _refusal(reason: str) -> ApiError:
    return ApiError(401, "unauthorized", "Missing or invalid credentials: send 'Authorization: Bearer <API key "
                    "or token>' or 'X-API-Key: <API key>'.", reason,
                    headers={"WWW-Authenticate": 'Bearer realm="msev15"'})


# The agent-to-agent endpoints (A2A JSON-RPC, MCP) take the same credentials as /api/.
AGENT_PATHS = ("/a2a", "/mcp")


def is_protected(path: str, settings: Settings) -> bool:
    return (path.startswith("/api/") or path in AGENT_PATHS or path.startswith(tuple(p + "/" for p in AGENT_PATHS))
            or (settings.auth_protect_docs and path.startswith(DOCS_PATHS)))


def auth_middleware(settings: Settings, failures: FailureLimit | None = None) -> Callable[..., object]:
    """Installed by create_app unless AUTH_MODE is none (then no request pays for it). ``failures``
    is the failed-authentication limit (store/auth_limits.py; the topology's, in memory unless given)."""
    if failures is None:
        failures = LocalFailureLimit(settings.auth_max_failures_per_minute, settings.trusted_proxies)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method == "OPTIONS" or not is_protected(request.path, settings):
            return await handler(request)
        client = failures.client_ip(request.remote, request.headers.get("X-Forwarded-For"))
        wait = await failures.blocked(client)
        if wait is not None:
            retry_after = max(1, math.ceil(wait))
            raise ApiError(429, "too_many_failed_authentications",
                           "Too many failed authentications from this address; retry later.",
                           headers={"Retry-After": str(retry_after)}, retry_after=retry_after)
        try:
            principal = await request.app[AUTHENTICATOR].authenticate(credential(request))
        except Unauthorized as exc:
            await failures.failed(client)
            log.warning("authentication refused: %s %s from %s: %s", request.method, request.path, client, exc)
            raise _refusal(str(exc)) from None
        request[PRINCIPAL] = principal
        check_route_role(request, principal.role)
        return await handler(request)

    return middleware
