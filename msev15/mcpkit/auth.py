"""Bearer tokens between the service and the project's MCP servers (MCP_AUTH_TOKEN).

The servers trust the tenant in ``_meta`` (:mod:`msev15.mcpkit.meta`), so only the service may
call them. :func:`require_bearer` wraps the Starlette app that ``streamable_http_app()`` returns:
every HTTP request without ``Authorization: Bearer <token>`` gets a 401 before any MCP
processing (``GET /health`` stays open for probes: it carries no tenant data, and its details
are for callers holding the token, see :func:`is_authenticated`). Tokens are compared in
constant time and never logged. Wrong tokens are counted per client address: past
MAX_FAILURES_PER_MINUTE in a minute the address gets 429 before its next token is compared
(:class:`msev15.common.failures.FailureWindow`).

:func:`bind_refusal` is the start-up rule: a server on a non-loopback address without a token
refuses to start unless MCP_ALLOW_UNAUTHENTICATED=true says the operator means it.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import math
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from msev15.common.failures import FailureWindow

log = logging.getLogger("mcpkit.auth")

OPEN_PATHS = frozenset({"/health"})
MAX_FAILURES_PER_MINUTE = 20
_AUTHENTICATED = "mcpkit.authenticated"


def is_authenticated(scope: Scope) -> bool:
    """Whether the request carried the server's bearer token (True when the server has none:
    then every caller is trusted, as for the tools). For the open paths' handlers."""
    state: dict[str, Any] = scope.get("state") or {}
    return bool(state.get(_AUTHENTICATED, True))


async def _refuse(send: Send, status: int, error: str, message: str, headers: list[tuple[bytes, bytes]]) -> None:
    body = json.dumps({"error": error, "message": message}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})


def require_bearer(app: ASGIApp, token: str, max_failures: int = MAX_FAILURES_PER_MINUTE) -> ASGIApp:
    """``app`` behind a bearer-token check; ``app`` itself when ``token`` is empty."""
    if not token:
        return app
    expected = f"Bearer {token}".encode()
    failures = FailureWindow(max_failures)

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        sent = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        if scope["method"] == "GET" and scope["path"] in OPEN_PATHS:
            # Open, and not a place to guess: a wrong token here is simply not authenticated.
            scope.setdefault("state", {})[_AUTHENTICATED] = hmac.compare_digest(sent, expected)
            await app(scope, receive, send)
            return
        client = (scope.get("client") or ("?", 0))[0]
        wait = failures.blocked(client)
        if wait is not None:
            retry_after = str(max(1, math.ceil(wait))).encode()
            await _refuse(send, 429, "too_many_failed_authentications",
                          "Too many failed authentications from this address; retry later.",
                          [(b"retry-after", retry_after)])
            return
        if hmac.compare_digest(sent, expected):
            await app(scope, receive, send)
            return
        failures.fail(client)
        log.warning("refused %s %s from %s: %s", scope["method"], scope["path"], client,
                    "wrong bearer token" if sent else "no bearer token")
        await _refuse(send, 401, "unauthorized", "This MCP server requires 'Authorization: Bearer <MCP_AUTH_TOKEN>'.",
                      [(b"www-authenticate", b'Bearer realm="mcp"')])

    return guarded


def is_loopback(host: str) -> bool:
    bare = host.strip("[]").lower()
    if bare == "localhost":
        return True
    try:
        return ipaddress.ip_address(bare).is_loopback
    except ValueError:
        return False


def bind_refusal(host: str, token: str, allow_unauthenticated: bool) -> str | None:
    """Why a server must not start on ``host`` (one sentence), or None."""
    if token or allow_unauthenticated or is_loopback(host):
        return None
    return (f"refusing to listen on {host} without MCP_AUTH_TOKEN: any machine that can reach this port could "
            "call the tools for any tenant. Set MCP_AUTH_TOKEN (and give the service the same token), bind "
            "127.0.0.1, or set MCP_ALLOW_UNAUTHENTICATED=true if a network policy already restricts callers.")
