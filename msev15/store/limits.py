"""Sliding-window limiters over 60 s: the state behind the per-IP, per-tenant and
failed-authentication limits (the middlewares that apply them live in ``handlers/``).

A sliding log: each client keeps the times of its allowed requests in the window (at most
``limit`` of them), so the limit is exact and ``Retry-After`` is when the oldest one leaves.
Idle clients are swept out as time passes, so memory follows the clients of the last minute,
not every IP ever seen. The client IP is the peer address; ``X-Forwarded-For`` is believed only
when the peer is a trusted proxy, reading from the right past trusted hops. A limiter shared by
several instances (:mod:`msev15.store.redis_limits`) replaces this one behind ``check``.
"""

from __future__ import annotations

import ipaddress
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Protocol

from aiohttp import web

WINDOW = 60.0
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


# The per-tenant limit (RATE_LIMIT_PER_TENANT_PER_MINUTE), filled by the topology when it is set.
TENANT_LIMITER: web.AppKey[Limiter] = web.AppKey("msev15.tenant_limiter")
