"""The failed-authentication limit (AUTH_MAX_FAILURES_PER_MINUTE): after that many refused
credentials from one client address within a minute, the address gets 429 until the oldest
failure leaves the window, whatever it sends.

In memory for one instance (common/failures.py's window). With the Redis store it is one
window per address shared by every instance (store/redis_window.py): otherwise N instances behind
a load balancer would allow N times the guesses. If Redis cannot be reached the check lets the
request through to authentication (which still refuses a bad credential) and a failure is not
counted, with a warning: an outage of the limiter must not lock every client out.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Protocol

from msev15.common.failures import FailureWindow
from msev15.store.limits import WINDOW, RateLimiter

log = logging.getLogger("api.auth")


class FailureLimit(Protocol):
    def client_ip(self, peer: str | None, forwarded_for: str | None) -> str: ...

    async def blocked(self, client: str) -> float | None:
        """Seconds until ``client`` may try again when it is at the limit now, else None."""
        ...

    async def failed(self, client: str) -> None:
        """Count one refused credential."""
        ...

    async def close(self) -> None: ...


class LocalFailureLimit:
    """The one failure window of the three programs (common/failures.py, which the MCP servers'
    token check and /metrics use too), with the service's client-address rule."""

    def __init__(self, limit: int, trusted_proxies: Iterable[str] = ()) -> None:
        self._addresses = RateLimiter(limit, trusted_proxies)  # its client_ip: the trusted-proxy rule
        self._window = FailureWindow(limit)

    def client_ip(self, peer: str | None, forwarded_for: str | None) -> str:
        return self._addresses.client_ip(peer, forwarded_for)

    async def blocked(self, client: str) -> float | None:
        return self._window.blocked(client)

    async def failed(self, client: str) -> None:
        self._window.fail(client)

    async def close(self) -> None:
        return None


class RedisFailureLimit(LocalFailureLimit):
    def __init__(self, url: str, limit: int, trusted_proxies: Iterable[str] = ()) -> None:
        super().__init__(limit, trusted_proxies)  # for client_ip: the trusted-proxy rule is the same
        from msev15.store.redis_kit import PREFIX  # only with Redis: one process never loads its client
        from msev15.store.redis_window import SlidingWindows

        self._windows = SlidingWindows(url, limit, WINDOW)
        self._prefix = f"{PREFIX}:authfail:"

    def _key(self, client: str) -> str:
        return self._prefix + client

    async def blocked(self, client: str) -> float | None:
        try:
            return await self._windows.blocked(self._key(client))
        except Exception as exc:
            log.warning("failed-authentication limit not checked: Redis unavailable (%s)", type(exc).__name__)
            return None

    async def failed(self, client: str) -> None:
        try:
            await self._windows.hit(self._key(client))
        except Exception as exc:
            log.warning("failed authentication not counted: Redis unavailable (%s)", type(exc).__name__)

    async def close(self) -> None:
        await self._windows.close()
