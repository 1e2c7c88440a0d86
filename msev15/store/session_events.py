"""The session stream's log: everything that happens in one session, in order, with its own ids.

``GET /api/v1/sessions/{id}/events`` (handlers/session_stream.py) reads it: every turn's events
(events/session_feed.py copies them from the bus), what operators and customers write while a
person holds the session, and each change of mode (agent/handoff.py). Ids are per session and
increase (1, 2, 3, ...); a reader resumes after the last id it saw, exactly once and in order,
while the events are retained: STREAM_RETENTION_SECONDS after the session's last event, and at
most :data:`MAX_EVENTS_PER_SESSION` per session.

:meth:`SessionEvents.publish` never blocks (the bus calls it for every token); :meth:`append`
returns once the event is in the log (handlers answer after it).

Turn events (``publish``) are kept only for a session someone watches: a reader asked for its last
id or read it within the retention. Nobody can read them otherwise ("from now on" starts at a
reader's ``last_id``; a reconnecting reader comes back within the retention), so an unwatched
turn pays nothing for the stream. What people write and the mode changes (``append``) are always
kept. :class:`MemorySessionEvents`
serves one process; ``RedisSessionEvents`` every instance on one Redis.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any, Protocol

from aiohttp import web

MAX_EVENTS_PER_SESSION = 2000
Entry = tuple[int, dict[str, Any]]


class SessionEvents(Protocol):
    def publish(self, tenant_id: str, session_id: str, event: dict[str, Any]) -> None:
        """Add a turn's event without waiting (in publish order), if the session is watched."""
        ...

    def watched(self, tenant_id: str, session_id: str) -> bool:
        """Could a reader get the session's turn events? No I/O: False lets the caller skip
        building the event. (A shared log that cannot tell without I/O says True and decides when
        it writes.)"""
        ...

    async def append(self, tenant_id: str, session_id: str, event: dict[str, Any]) -> int:
        """Add an event after everything published before it; its id."""
        ...

    async def read(self, tenant_id: str, session_id: str, after: int, wait: float) -> list[Entry]:
        """The retained events after id ``after``, oldest first; waits up to ``wait`` seconds for
        one when there is none yet (an empty list then)."""
        ...

    async def last_id(self, tenant_id: str, session_id: str) -> int:
        """The id of the session's latest event (0: none): where "from now on" starts. The
        session is watched from here on (for the retention, renewed by each read)."""
        ...

    async def forget(self, tenant_id: str, session_id: str, last: dict[str, Any] | None = None) -> None:
        """Drop the session's events (the session was deleted or expired). With ``last``, the log
        keeps that one event, after everything published before (its id follows theirs), so open
        streams read it and end."""
        ...

    def start(self) -> None: ...

    async def close(self) -> None: ...


class _Log:
    __slots__ = ("entries", "last", "seq", "waiters", "watched_until")

    def __init__(self) -> None:
        self.watched_until = 0.0
        self.seq = 0
        self.entries: deque[Entry] = deque(maxlen=MAX_EVENTS_PER_SESSION)
        self.waiters: list[asyncio.Future[None]] = []
        self.last = 0.0


class MemorySessionEvents:
    """One process: a bounded deque per session; idle logs past the retention are dropped."""

    def __init__(self, retention_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.retention = retention_seconds
        self._clock = clock
        self._logs: OrderedDict[tuple[str, str], _Log] = OrderedDict()  # least recently written first

    def _expire(self, now: float) -> None:
        while self._logs:
            key, log = next(iter(self._logs.items()))
            if log.last + self.retention > now or log.waiters:
                break
            del self._logs[key]

    def watched(self, tenant_id: str, session_id: str) -> bool:
        log = self._logs.get((tenant_id, session_id))
        return log is not None and (log.watched_until > self._clock() or bool(log.waiters))

    def _watch(self, key: tuple[str, str]) -> _Log:
        """The session's log, watched for the retention from now (created for a first reader)."""
        now = self._clock()
        self._expire(now)
        log = self._logs.get(key)
        if log is None:
            log = self._logs[key] = _Log()
        else:
            self._logs.move_to_end(key)
        log.last = max(log.last, now)
        log.watched_until = now + self.retention
        return log

    def publish(self, tenant_id: str, session_id: str, event: dict[str, Any]) -> None:
        if self.watched(tenant_id, session_id):
            self._add(tenant_id, session_id, event)

    def _add(self, tenant_id: str, session_id: str, event: dict[str, Any]) -> None:
        now = self._clock()
        self._expire(now)
        key = (tenant_id, session_id)
        log = self._logs.get(key)
        if log is None:
            log = self._logs[key] = _Log()
        else:
            self._logs.move_to_end(key)
        log.seq += 1
        log.last = now
        log.entries.append((log.seq, event))
        waiters, log.waiters = log.waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def append(self, tenant_id: str, session_id: str, event: dict[str, Any]) -> int:
        self._add(tenant_id, session_id, event)
        return self._logs[(tenant_id, session_id)].seq

    async def read(self, tenant_id: str, session_id: str, after: int, wait: float) -> list[Entry]:
        key = (tenant_id, session_id)
        log = self._watch(key)  # a reader before any event waits on this log
        if log.seq <= after:
            waiter = asyncio.get_running_loop().create_future()
            log.waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter, wait)
            except TimeoutError:
                return []
            finally:
                if waiter in log.waiters:
                    log.waiters.remove(waiter)
        return [entry for entry in log.entries if entry[0] > after]

    async def last_id(self, tenant_id: str, session_id: str) -> int:
        return self._watch((tenant_id, session_id)).seq

    async def forget(self, tenant_id: str, session_id: str, last: dict[str, Any] | None = None) -> None:
        key = (tenant_id, session_id)
        log = self._logs.get(key)
        if log is not None:
            log.entries.clear()
        if last is not None:
            self._add(tenant_id, session_id, last)
        elif log is not None and not log.waiters:
            del self._logs[key]

    def start(self) -> None:
        return None

    async def close(self) -> None:
        for log in self._logs.values():
            for waiter in log.waiters:
                if not waiter.done():
                    waiter.set_result(None)


SESSION_EVENTS: web.AppKey[SessionEvents] = web.AppKey("msev15.session_events")
