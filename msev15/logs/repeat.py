"""Repeated identical warnings and errors are written once per interval, with a count.

A flood of one failure (``accept()`` out of file descriptors, a malformed request per
connection) would otherwise write a line per occurrence, and such lines belong to no request:
100,000 lines say no more than one line and a number, and fill the disk that the rest of the
service needs. The first occurrence is
written at once; later identical ones within ``interval`` seconds are counted, and the first one
after the interval says how many were held back ("... [repeated 1234 times in 10s]").
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

MAX_KEYS = 1024  # distinct lines tracked at once; beyond it the oldest are forgotten


class RepeatFilter(logging.Filter):
    def __init__(self, interval: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.interval = interval
        self._clock = clock
        self._seen: dict[tuple[object, ...], list[float | int]] = {}  # key -> [window start, held back]

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        exc = record.exc_info[1] if record.exc_info else None
        # The request id is part of the line: a line per request or turn is never held back, only
        # the same failure repeating outside any request (accept errors, malformed requests).
        key = (record.name, record.levelno, record.getMessage(), type(exc).__name__ if exc else None,
               getattr(record, "request_id", None), getattr(record, "tenant", None), getattr(record, "session", None))
        now = self._clock()
        seen = self._seen.get(key)
        if seen is not None and now - seen[0] < self.interval:
            seen[1] += 1
            return False
        if seen is not None and seen[1]:
            record.msg = f"{record.msg} [repeated {int(seen[1])} times in the last {self.interval:g}s]"
        if len(self._seen) >= MAX_KEYS and seen is None:
            del self._seen[next(iter(self._seen))]
        self._seen.pop(key, None)
        self._seen[key] = [now, 0]
        return True
