"""How many messages each tenant's conversations may send per hour (EMAIL_MAX_PER_TENANT_PER_HOUR).

A sliding one-hour log per tenant, in memory: the email tools are a way out of the service for
whatever a chat asks, so one tenant (or one prompt) must not turn them into a bulk mailer.
Per instance: N instances allow up to N times the limit between them.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

HOUR = 3600.0


class SendLimiter:
    """``take(tenant)`` reserves one send or returns the seconds until one frees up; 0 = no limit."""

    def __init__(self, per_hour: int, clock: Callable[[], float] = time.monotonic, window: float = HOUR) -> None:
        self.per_hour = per_hour
        self.window = window
        self._clock = clock
        self._sent: dict[str, deque[float]] = {}
        self._next_sweep = 0.0

    def take(self, tenant_id: str) -> float | None:
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
