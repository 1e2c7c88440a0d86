"""Rate limiting middleware: per client IP, and per tenant where the tenant is known.

Both go through the small :class:`~msev15.store.limits.Limiter` interface (``check(key)``), so a
limiter shared by several instances (Redis) replaces the in-process one without touching the
callers; which one runs is the topology's choice. The tenant limit
(RATE_LIMIT_PER_TENANT_PER_MINUTE) is checked where the tenant is known: by the middleware for
requests naming it in the query, and by ``start_turn`` for every new turn.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from aiohttp import web
from aiohttp.typedefs import Handler

from msev15.events.metrics import METRICS, ServiceMetrics
from msev15.handlers.errors import EXTRA_HEADERS, ApiError
from msev15.store.limits import TENANT_LIMITER, RateLimiter

EXEMPT_PREFIXES = ("/health", "/docs", "/redoc", "/openapi.json", "/metrics")

async def check_tenant_rate(app: web.Application, tenant_id: str) -> None:
    """Count one request of ``tenant_id`` against RATE_LIMIT_PER_TENANT_PER_MINUTE (when set);
    429 ``tenant_rate_limited`` with Retry-After beyond it."""
    limiter = app.get(TENANT_LIMITER)
    if limiter is None:
        return
    allowed, _, reset_in = await limiter.check(tenant_id)
    if not allowed:
        app[METRICS].rate_limited.inc(("tenant",))
        retry_after = max(1, math.ceil(reset_in))
        raise ApiError(429, "tenant_rate_limited", f"This tenant sent more than {limiter.limit} requests in a minute.",
                       headers={"Retry-After": str(retry_after)}, retry_after=retry_after)


# Set on a request already counted against its tenant's limit: a turn it starts is not counted again.
TENANT_COUNTED = web.RequestKey("msev15.tenant_counted", bool)


def rate_limit_middleware(limiter: RateLimiter, metrics: ServiceMetrics | None = None) -> Callable[..., object]:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(EXEMPT_PREFIXES) or request.method == "OPTIONS":
            return await handler(request)
        client = limiter.client_ip(request.remote, request.headers.get("X-Forwarded-For"))
        allowed, remaining, reset_in = await limiter.check(client)
        headers = {
            "X-RateLimit-Limit": str(limiter.limit),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": str(math.ceil(time.time() + reset_in)),
        }
        if not allowed:
            if metrics is not None:
                metrics.rate_limited.inc(("ip",))
            retry_after = max(1, math.ceil(reset_in))
            headers["Retry-After"] = str(retry_after)
            raise ApiError(429, "Rate limit exceeded",
                           f"Maximum {limiter.limit} requests per minute per IP address",
                           headers=headers, retry_after=retry_after)
        request.setdefault(EXTRA_HEADERS, {}).update(headers)
        return await handler(request)

    return middleware
