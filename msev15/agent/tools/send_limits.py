"""How many messages each tenant's conversations may send per hour (EMAIL_MAX_PER_TENANT_PER_HOUR).

A sliding one-hour log per tenant: the email tools are a way out of the service for whatever a
chat asks, so one tenant (or one prompt) must not turn them into a bulk mailer. In memory for one
instance; with the Redis store one log per tenant shared by every instance
(:class:`RedisSendLimiter`), so N instances do not allow N times the limit.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from aiohttp import web

from msev15.agent.tools.registry import ToolError

HOUR = 3600.0


class SendLimiter:
    """``take(tenant)`` reserves one send or returns the seconds until one frees up; 0 = no limit."""

    def __init__(self, per_hour: int, clock: Callable[[], float] = time.monotonic, window: float = HOUR) -> None:
        self.per_hour = per_hour
        self.window = window
        self._clock = clock
        self._sent: dict[str, deque[float]] = {}
        self._next_sweep = 0.0

    async def take(self, tenant_id: str) -> float | None:
        """None when the send may go ahead (and it is counted); else seconds until it may."""
        if self.per_hour <= 0:
            return None
        now = self._clock()
        if now >= self._next_sweep:  # idle tenants do not accumulate
            for key in [k for k, q in self._sent.items() if not q or q[-1] <= now - self.window]:
                del self._sent[key]
            self._next_sweep = now + self.window / 4
        sent = self._sent.setdefault(tenant_id, deque())
        while sent and sent[0] <= now - self.window:
            sent.popleft()
        if len(sent) >= self.per_hour:
            return sent[0] + self.window - now
        sent.append(now)
        return None

    def give_back(self, tenant_id: str) -> None:
        """Un-count the latest reservation (the message was refused before any delivery attempt)."""
        sent = self._sent.get(tenant_id)
        if sent:
            sent.pop()

    async def close(self) -> None:
        return None


class RedisSendLimiter(SendLimiter):
    """The same limit, one window per tenant in Redis (store/redis_window.py). If Redis cannot be
    reached the send is refused (ToolError, said honestly to the model): this limit guards a way
    out of the service, so it fails closed."""

    def __init__(self, url: str, per_hour: int, window: float = HOUR) -> None:
        super().__init__(per_hour, window=window)
        from msev15.store.redis_window import SlidingWindows

        self._windows = SlidingWindows(url, max(1, per_hour), window)

    async def take(self, tenant_id: str) -> float | None:
        if self.per_hour <= 0:
            return None
        from msev15.store.redis_kit import tenant_key

        try:
            allowed, _, reset = await self._windows.hit(tenant_key(tenant_id, "email", "sent"))
        except Exception as exc:
            raise ToolError("The email was NOT sent: its sending limit cannot be checked right now (the shared "
                            "store is unavailable). Try again in a minute.") from exc
        return None if allowed else reset

    async def close(self) -> None:
        await self._windows.close()


# The topology's send limiter (shared through Redis when the topology is), for the Mailer.
SEND_LIMITER: web.AppKey[SendLimiter] = web.AppKey("msev15.send_limiter")
