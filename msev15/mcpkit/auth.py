"""Bearer tokens between the service and the project's MCP servers (MCP_AUTH_TOKEN).

The servers trust the tenant in ``_meta`` (:mod:`msev15.mcpkit.meta`), so only the service may
call them. :func:`require_bearer` wraps the Starlette app that ``streamable_http_app()`` returns:
every HTTP request without ``Authorization: Bearer <token>`` gets a 401 before any MCP
processing (``GET /health`` stays open for probes: it carries no tenant data). Tokens are
compared in constant time and never logged.

:func:`bind_refusal` is the start-up rule: a server on a non-loopback address without a token
refuses to start unless MCP_ALLOW_UNAUTHENTICATED=true says the operator means it.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging

from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger("mcpkit.auth")

OPEN_PATHS = frozenset({"/health"})


def require_bearer(app: ASGIApp, token: str) -> ASGIApp:
    """``app`` behind a bearer-token check; ``app`` itself when ``token`` is empty."""
    if not token:
        return app
    expected = f"Bearer {token}".encode()

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (scope["method"] == "GET" and scope["path"] in OPEN_PATHS):
            await app(scope, receive, send)
            return
        sent = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        if hmac.compare_digest(sent, expected):
            await app(scope, receive, send)
            return
        client = scope.get("client") or ("?", 0)
        log.warning("refused %s %s from %s: %s", scope["method"], scope["path"], client[0],
                    "wrong bearer token" if sent else "no bearer token")
        body = json.dumps({"error": "unauthorized",
                           "message": "This MCP server requires 'Authorization: Bearer <MCP_AUTH_TOKEN>'."}).encode()
        await send({"type": "http.response.start", "status": 401, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"www-authenticate", b'Bearer realm="mcp"')]})
        await send({"type": "http.response.body", "body": body})

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
