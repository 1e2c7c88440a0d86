"""GET /metrics (Prometheus text format) and the HTTP metrics middleware.

The route label is the matched route's template (``/api/v1/sessions/{session_id}``), or
``unmatched`` for paths no route knows: never the raw path, so scanning random URLs cannot grow
the series (nor can made-up methods: those outside the standard ones count as ``other``).
/metrics is exempt from rate limits and, when METRICS_TOKEN is set, needs
``Authorization: Bearer <token>`` (the scheme in any case, as for the API). Wrong tokens are
counted per client address: past AUTH_MAX_FAILURES_PER_MINUTE in a minute the address gets 429
before its next token is compared.
"""

from __future__ import annotations

import hmac
import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from msev15.agent.context import MCP, RUNNER
from msev15.common.failures import FailureWindow
from msev15.config import Settings
from msev15.events.metrics import METRICS
from msev15.handlers.errors import ApiError
from msev15.store.base import SESSIONS
from msev15.store.context import ORDERS
from msev15.store.limits import RateLimiter

log = logging.getLogger("api.metrics")

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
STREAM_ROUTES = frozenset({"/api/v1/chat/stream", "/api/v1/sessions/{session_id}/turns/{turn_id}/events"})


def route_of(request: web.Request) -> str:
    route = request.match_info.route
    resource = route.resource
    if resource is None or request.match_info.http_exception is not None:
        return "unmatched"
    return resource.canonical


@dataclass(frozen=True, slots=True)
class TokenGuard:
    """METRICS_TOKEN's failed attempts per client; ``addresses`` resolves the client as the
    rate limiter does (X-Forwarded-For only from TRUSTED_PROXIES)."""

    token: str
    failures: FailureWindow
    addresses: RateLimiter


TOKEN_GUARD = web.AppKey("msev15.metrics_token_guard", TokenGuard)


def setup_token_guard(app: web.Application, settings: Settings) -> None:
    if settings.metrics_token:
        app[TOKEN_GUARD] = TokenGuard(settings.metrics_token, FailureWindow(settings.auth_max_failures_per_minute),
                                      RateLimiter(settings.auth_max_failures_per_minute, settings.trusted_proxies))


def _bearer(header: str) -> bytes | None:
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip().encode("utf-8", "surrogateescape")


def _check_token(request: web.Request, guard: TokenGuard) -> None:
    client = guard.addresses.client_ip(request.remote, request.headers.get("X-Forwarded-For"))
    wait = guard.failures.blocked(client)
    if wait is not None:
        retry_after = max(1, math.ceil(wait))
        raise ApiError(429, "too_many_failed_authentications",
                       "Too many failed authentications from this address; retry later.",
                       headers={"Retry-After": str(retry_after)}, retry_after=retry_after)
    supplied = _bearer(request.headers.get("Authorization", ""))
    if supplied is None or not hmac.compare_digest(supplied, guard.token.encode()):
        guard.failures.fail(client)
        log.warning("metrics: refused a %s token from %s", "wrong" if supplied else "missing", client)
        raise ApiError(401, "unauthorized", "This endpoint needs 'Authorization: Bearer <METRICS_TOKEN>'.",
                       headers={"WWW-Authenticate": "Bearer"})


async def metrics(request: web.Request) -> web.Response:
    """Prometheus metrics (text exposition format).
    ---
    summary: Prometheus metrics
    description: |
      Requests, turns, tokens, tool calls, queues, streams, sessions and connections. When
      `METRICS_TOKEN` is set, send `Authorization: Bearer <token>`. Exempt from rate limits.
    tags: [operations]
    responses:
      "200":
        description: The metrics.
        content:
          text/plain:
            schema: {type: string}
      "401":
        description: METRICS_TOKEN is set and the request did not carry it.
        content:
          application/json:
            schema: {$ref: "#/components/schemas/Error"}
      "429":
        description: Too many wrong tokens from this address in the last minute (Retry-After says when to retry).
        content:
          application/json:
            schema: {$ref: "#/components/schemas/Error"}
    """
    guard = request.app.get(TOKEN_GUARD)
    if guard is not None:
        _check_token(request, guard)
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


class ConnectionCounts(Protocol):
    """The server layer's connection counters (msev15.server.connections.ConnectionStats)."""

    open: int
    shed: int
    header_timeouts: int
    parser_errors: int


def app_gauges(app: web.Application, stats: ConnectionCounts, store_label: str,
               ) -> Callable[[], Iterable[tuple[str, str, dict[str, str], float]]]:
    """What the gauges read at scrape time, from each part's owner (``stats``: the server's
    connection counters; ``store_label``: which session store the topology runs)."""

    def read() -> Iterable[tuple[str, str, dict[str, str], float]]:
        metrics = app[METRICS]
        yield "msev15_open_streams", "SSE streams open now.", {}, metrics.open_streams[0]
        if RUNNER in app:
            runner = app[RUNNER]
            yield "msev15_turns_queued", "Turns waiting for a slot.", {}, runner.queued
            yield "msev15_turns_running", "Turns running now.", {}, runner.running
        sessions = app.get(SESSIONS)
        if sessions is not None:  # held() reads no I/O: the shared stores refresh it on writes and sweeps
            # sqlite and redis report the one shared store from every instance (take the max
            # across instances); memory, the instance's own (sum them). Evictions are per instance.
            store = {"store": store_label}
            yield "msev15_sessions", "Sessions held in the session store.", store, sessions.held()
            yield ("msev15_sessions_evicted_total", "Sessions this instance dropped by a session cap.", store,
                   sessions.evicted)
        for name, connection in (app.get(MCP) or {}).items():
            yield ("msev15_mcp_connected", "1 when the MCP server is connected.", {"server": name},
                   1.0 if connection.status == "connected" else 0.0)
        yield "msev15_connections_open", "Client connections open now (msev15 serve).", {}, stats.open
        yield ("msev15_connections_shed_total", "Connections closed or refused at HTTP_MAX_CONNECTIONS.", {},
               stats.shed)
        yield ("msev15_connections_header_timeouts_total",
               "Connections closed for not sending a request head in time.", {}, stats.header_timeouts)
        yield ("msev15_http_parser_errors_total", "Requests refused by the HTTP parser (400/431).", {},
               stats.parser_errors)
        if ORDERS in app:
            yield ("msev15_store_available", "0 while the orders store refuses writes.", {},
                   0.0 if app[ORDERS].write_failure else 1.0)

    return read
