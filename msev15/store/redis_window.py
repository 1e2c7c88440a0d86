"""Sliding-window counts shared by every instance: a sorted set of hit times per key, changed by
one Lua script each, on Redis's own clock (instances with skewed clocks agree).

Used by the request rate limits (store/redis_limits.py), the failed-authentication limit
(store/auth_limits.py) and the per-tenant email limit (agent/tools/send_limits.py). A key holds
at most ``limit`` members and expires one window after its newest hit.
"""

from __future__ import annotations

import itertools
import os
from typing import Any

import redis.asyncio as aioredis

from msev15.common.tasks import close_within
from msev15.store.redis_kit import connect

# KEYS: the key's log; ARGV: window seconds, limit, a unique member.
# Counts one hit unless the window is full. Returns {allowed (0/1), remaining, seconds until a slot frees}.
HIT_SCRIPT = """
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

# KEYS: the key's log; ARGV: window seconds, limit. Counts nothing: returns the seconds until the
# key may be counted again when it is full now, else -1 (limits on failures, counted afterwards).
BLOCKED_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local window = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then return '-1' end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return tostring(tonumber(oldest[2]) + window - now)
"""


class SlidingWindows:
    """One client for every key of one limit."""

    def __init__(self, url: str, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._redis: aioredis.Redis = connect(url)
        self._hit = self._redis.register_script(HIT_SCRIPT)
        self._blocked = self._redis.register_script(BLOCKED_SCRIPT)
        self._ids = itertools.count()
        self._tag = os.urandom(6).hex()  # members unique across instances

    async def hit(self, key: str) -> tuple[bool, int, float]:
        """Count one hit unless full: (allowed, remaining, seconds until a slot frees). Raises on
        Redis failures: each caller decides whether its limit fails open or closed."""
        result: Any = await self._hit(keys=[key], args=[self.window, self.limit, f"{self._tag}:{next(self._ids)}"])
        allowed, remaining, reset = result
        return bool(int(allowed)), int(remaining), float(reset)

    async def blocked(self, key: str) -> float | None:
        wait = float(await self._blocked(keys=[key], args=[self.window, self.limit]))
        return None if wait < 0 else wait

    async def close(self) -> None:
        await close_within(self._redis.aclose(), "the shared limit's Redis client")
