"""Rate limits shared by every instance: one sliding 60 s window per client IP (or per tenant,
for RATE_LIMIT_PER_TENANT_PER_MINUTE) in Redis.

The same sliding log as the in-process limiter (handlers/ratelimit.py), kept in a sorted set
per client and changed by one Lua script (store/redis_window.py), so the count is exact and
atomic across instances; the script reads Redis's own clock, so instances with skewed clocks agree. If Redis cannot be
reached the request is let through (and a warning logged): an outage of the limiter must not
become an outage of the service.
"""

from __future__ import annotations

import logging

from msev15.store.limits import WINDOW, RateLimiter
from msev15.store.redis_kit import PREFIX
from msev15.store.redis_window import SlidingWindows

log = logging.getLogger("api.ratelimit")

class RedisRateLimiter(RateLimiter):
    def __init__(self, url: str, limit: int, trusted_proxies: tuple[str, ...] = (), window: float = WINDOW,
                 scope: str = "ip") -> None:
        super().__init__(limit, trusted_proxies, window=window)
        self.scope = scope  # "ip" (per client address) or "tenant" (RATE_LIMIT_PER_TENANT_PER_MINUTE)
        self._windows = SlidingWindows(url, limit, window)

    async def check(self, client: str) -> tuple[bool, int, float]:
        key = f"{PREFIX}:ratelimit:{self.scope}:{client}"
        try:
            return await self._windows.hit(key)
        except Exception as exc:
            log.warning("rate limit not applied: Redis unavailable (%s)", type(exc).__name__)
            return True, self.limit, self.window

    async def close(self) -> None:
        await self._windows.close()
