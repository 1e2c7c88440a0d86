"""Rate limits shared by every instance: one sliding 60 s window per client IP (or per tenant,
for RATE_LIMIT_PER_TENANT_PER_MINUTE) in Redis.

The same sliding log as the in-process limiter (handlers/ratelimit.py), kept in a sorted set
per client and changed by one Lua script, so the count is exact and atomic across instances;
the script reads Redis's own clock, so instances with skewed clocks agree. If Redis cannot be
reached the request is let through (and a warning logged): an outage of the limiter must not
become an outage of the service.
"""

from __future__ import annotations

import itertools
import logging
import os

import redis.asyncio as aioredis

from msev15.store.limits import WINDOW, RateLimiter
from msev15.store.redis_kit import PREFIX, connect

log = logging.getLogger("api.ratelimit")

# KEYS: the client's log; ARGV: window seconds, limit, a unique member.
# Returns {allowed (0/1), remaining, seconds until a slot frees (string)}.
_HIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local window = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local n = redis.call('ZCARD', KEYS[1])
if n >= limit then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {0, 0, tostring(tonumber(oldest[2]) + window - now)}
end
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('PEXPIRE', KEYS[1], math.ceil(window * 1000))
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {1, limit - n - 1, tostring(tonumber(oldest[2]) + window - now)}
"""


class RedisRateLimiter(RateLimiter):
    def __init__(self, url: str, limit: int, trusted_proxies: tuple[str, ...] = (), window: float = WINDOW,
                 scope: str = "ip") -> None:
        super().__init__(limit, trusted_proxies, window=window)
        self.scope = scope  # "ip" (per client address) or "tenant" (RATE_LIMIT_PER_TENANT_PER_MINUTE)
        self._redis: aioredis.Redis = connect(url)
        self._script = self._redis.register_script(_HIT)
        self._ids = itertools.count()
        self._tag = os.urandom(6).hex()

    async def check(self, client: str) -> tuple[bool, int, float]:
        key = f"{PREFIX}:ratelimit:{self.scope}:{client}"
        try:
            allowed, remaining, reset = await self._script(
                keys=[key], args=[self.window, self.limit, f"{self._tag}:{next(self._ids)}"])
        except Exception as exc:
            log.warning("rate limit not applied: Redis unavailable (%s)", type(exc).__name__)
            return True, self.limit, self.window
        return bool(int(allowed)), int(remaining), float(reset)

    async def close(self) -> None:
        await self._redis.aclose()
