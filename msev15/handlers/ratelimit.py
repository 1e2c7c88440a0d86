"""Rate limiting over a sliding 60 s window: per client IP (a middleware) and per tenant.

Both go through the small :class:`Limiter` interface (``hit(key)``), so a limiter shared by
several instances (Redis) can replace the in-process one without touching the callers. The
tenant limit (RATE_LIMIT_PER_TENANT_PER_MINUTE) is checked where the tenant is known: by the
middleware for requests naming it in the query, and by ``start_turn`` for every new turn.

A sliding log: each client keeps the times of its allowed requests in the window (at most
``limit`` of them), so the limit is exact and ``Retry-After`` is when the oldest one leaves.
Idle clients are swept out as time passes, so memory follows the clients of the last minute,
not every IP ever seen. The client IP is the peer address; ``X-Forwarded-For`` is believed only
when the peer is a trusted proxy, reading from the right past trusted hops.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Protocol

from aiohttp import web
from aiohttp.typedefs import Handler

from msev15.handlers.errors import EXTRA_HEADERS, ApiError

if TYPE_CHECKING:
    from msev15.events.metrics import ServiceMetrics

WINDOW = 60.0
EXEMPT_PREFIXES = ("/health", "/docs", "/redoc", "/openapi.json", "/metrics")
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Limiter(Protocol):
    limit: int

    async def check(self, client: str) -> tuple[bool, int, float]:
        """Count one request of ``client``: (allowed, remaining, seconds until a slot frees)."""
        ...


class RateLimiter:
    def __init__(self, limit: int, trusted_proxies: Iterable[str] = (), clock: Callable[[], float] = time.monotonic,
                 window: float = WINDOW) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._hits: dict[str, deque[float]] = {}
        self._trusted: tuple[_Network, ...] = tuple(ipaddress.ip_network(p, strict=False) for p in trusted_proxies)
        self._next_sweep = 0.0

    def __len__(self) -> int:
        return len(self._hits)

    def _is_trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self._trusted)

    def client_ip(self, peer: str | None, forwarded_for: str | None) -> str:
        peer = peer or "unknown"
        if not forwarded_for or not self._trusted or not self._is_trusted(peer):
            return peer
        hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
        for hop in reversed(hops):
            if not self._is_trusted(hop):
                return hop
        return hops[0] if hops else peer

    def _sweep(self, now: float) -> None:
        cutoff = now - self.window
        # An entry can be empty (``blocked`` and ``hit`` pop expired times): that is idle too.
        for key in [k for k, hits in self._hits.items() if not hits or hits[-1] <= cutoff]:
            del self._hits[key]
        self._next_sweep = now + self.window / 4

    async def check(self, client: str) -> tuple[bool, int, float]:
        """``hit``, as every limiter offers it (a shared one asks Redis)."""
        return self.hit(client)

    async def close(self) -> None:
        return None

    def blocked(self, client: str) -> float | None:
        """Seconds until ``client`` may be counted again when it is at the limit now, else None.
        Counts nothing (for limits on failures, which are counted after the fact)."""
        hits = self._hits.get(client)
        if not hits:
            return None
        cutoff = self._clock() - self.window
        while hits and hits[0] <= cutoff:
            hits.popleft()
        if not hits:
            del self._hits[client]
            return None
        if len(hits) < self.limit:
            return None
        return hits[0] + self.window - self._clock()

    def hit(self, client: str) -> tuple[bool, int, float]:
        """Count one request. Returns (allowed, remaining, seconds until a slot frees)."""
        now = self._clock()
        if now >= self._next_sweep:
            self._sweep(now)
        hits = self._hits.get(client)
        if hits is None:
            hits = self._hits[client] = deque()
        cutoff = now - self.window
        while hits and hits[0] <= cutoff:
            hits.popleft()
        if len(hits) >= self.limit:
            return False, 0, hits[0] + self.window - now
        hits.append(now)
        reset = hits[0] + self.window - now
        return True, self.limit - len(hits), reset


async def check_tenant_rate(app: web.Application, tenant_id: str) -> None:
    """Count one request of ``tenant_id`` against RATE_LIMIT_PER_TENANT_PER_MINUTE (when set);
    429 ``tenant_rate_limited`` with Retry-After beyond it."""
    from msev15 import keys  # keys imports this module's Limiter for its types

    limiter = app.get(keys.TENANT_LIMITER)
    if limiter is None:
        return
    allowed, _, reset_in = await limiter.check(tenant_id)
    if not allowed:
        app[keys.METRICS].rate_limited.inc(("tenant",))
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
