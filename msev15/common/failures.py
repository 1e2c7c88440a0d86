"""Failed attempts per client over a sliding minute: the brake on guessing a secret.

Used where a shared secret guards an endpoint (the service's ``/metrics`` with METRICS_TOKEN,
the MCP servers' bearer token): a client past ``limit`` failures in ``window`` seconds is refused
(429 with Retry-After) *before* its next guess is compared, so a right guess is not told apart
from a wrong one while it waits. Successes are not counted and reset nothing.

Memory follows the clients that failed in the last window: idle entries are swept as time passes,
and at most ``max_clients`` are kept (the oldest entry is dropped past that, so a flood of
addresses cannot grow the table).
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable

WINDOW_SECONDS = 60.0
MAX_CLIENTS = 100_000


class FailureWindow:
    def __init__(self, limit: int, window: float = WINDOW_SECONDS, clock: Callable[[], float] = time.monotonic,
                 max_clients: int = MAX_CLIENTS) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self.window = window
        self._clock = clock
        self._max_clients = max_clients
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._next_sweep = 0.0

    def __len__(self) -> int:
        return len(self._failures)

    def _expire(self, times: deque[float], now: float) -> None:
        cutoff = now - self.window
        while times and times[0] <= cutoff:
            times.popleft()

    def _sweep(self, now: float) -> None:
        for client in [c for c, times in self._failures.items() if not times or times[-1] <= now - self.window]:
            del self._failures[client]
        self._next_sweep = now + self.window / 4

    def blocked(self, client: str) -> float | None:
        """Seconds until ``client`` may try again when it has ``limit`` failures in the window, else None."""
        times = self._failures.get(client)
        if times is None:
            return None
        now = self._clock()
        self._expire(times, now)
        if len(times) < self.limit:
            return None
        return max(0.0, times[0] + self.window - now)

    def fail(self, client: str) -> None:
        """Count one failed attempt of ``client``."""
        now = self._clock()
        if now >= self._next_sweep:
            self._sweep(now)
        times = self._failures.get(client)
        if times is None:
            times = self._failures[client] = deque(maxlen=self.limit)
            while len(self._failures) > self._max_clients:
                self._failures.popitem(last=False)
        else:
            self._failures.move_to_end(client)
            self._expire(times, now)
        times.append(now)
