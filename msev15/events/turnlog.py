"""The turn log: every client event of a turn, numbered 1..n, kept while the turn runs and for a
while after it ends.

A stream is "replay from seq k, then follow": a reader keeps only an index into the turn's event
list and waits for it to grow, so a new stream (k = 0), a ``Last-Event-ID`` resume and a second
reader of the same turn are one code path, and a reader costs no queue of its own. Events are
appended here *before* they are fanned out on the bus, so a reader that finds the log has
everything a subscriber would have seen.

Memory is bounded: finished turns are kept for ``retention_seconds`` and at most
``max_retained_events`` events over all finished turns; past either bound the oldest finished
turns go first and a reader asking for them gets "not found". Running turns are never evicted
(their size is bounded by the model output cap and the tool-round limit).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Literal

from aiohttp import web

from msev15.events.types import TurnCompleted, TurnEvent, TurnFailed, TurnRequested

TurnStatus = Literal["queued", "running", "completed", "waiting", "failed", "cancelled", "interrupted"]
STOPPED: dict[str, TurnStatus] = {"cancelled": "cancelled", "interrupted": "interrupted"}


def completed_status(event: TurnCompleted) -> TurnStatus:
    """``waiting`` for a turn that paused on calls waiting for a person or the client."""
    return "waiting" if event.status == "waiting" else "completed"


class TurnView:
    """How a reader sees a turn, run here (:class:`TurnRecord`) or by another instance
    (events/redis_turnlog.py), and what both derive from their events and identity."""

    __slots__ = ()
    turn_id: str
    request_id: str
    tenant_id: str
    session_id: str
    status: TurnStatus
    events: list[TurnEvent]
    error: str | None
    message_count: int | None
    finished_at: float | None
    profile_version: int | None  # known once the turn started running (its tenant's profile)

    @property
    def last_seq(self) -> int:
        return len(self.events)

    @property
    def finished(self) -> bool:
        return self.finished_at is not None

    @property
    def terminal(self) -> TurnCompleted | TurnFailed | None:
        if self.finished_at is None:
            return None
        last = self.events[-1]
        assert isinstance(last, TurnCompleted | TurnFailed)
        return last

    async def wait(self, after: int) -> None:
        raise NotImplementedError

    async def catch_up(self) -> None:
        """Hold every event the log has so far, without waiting for more (a turn run by another
        instance is read lazily; one run here always is up to date)."""
        return None

    async def outcome(self) -> TurnCompleted | TurnFailed:
        """Wait for the terminal event."""
        while (terminal := self.terminal) is None:
            await self.wait(self.last_seq)
        return terminal

    def status_view(self) -> dict[str, object]:
        """The turn status resource (``GET .../turns/{turn_id}``)."""
        view: dict[str, object] = {"turn_id": self.turn_id, "session_id": self.session_id,
                                   "tenant_id": self.tenant_id, "status": self.status, "last_seq": self.last_seq}
        if self.message_count is not None:
            view["message_count"] = self.message_count
        if self.error is not None:
            view["error"] = self.error
        if self.profile_version is not None:
            view["profile_version"] = self.profile_version
        return view


class TurnRecord(TurnView):
    """One turn's identity, status and numbered events. ``seq`` of ``events[i]`` is ``i + 1``."""

    __slots__ = ("turn_id", "tenant_id", "session_id", "request_id", "stream", "status", "events",
                 "error", "message_count", "finished_at", "profile_version", "_waiters")

    def __init__(self, turn: TurnRequested) -> None:
        self.turn_id = turn.turn_id
        self.tenant_id = turn.tenant_id
        self.session_id = turn.session_id
        self.request_id = turn.request_id
        self.stream = turn.stream
        self.status: TurnStatus = "queued"
        self.events: list[TurnEvent] = []
        self.error: str | None = None
        self.message_count: int | None = None
        self.finished_at: float | None = None
        self.profile_version: int | None = None  # set by the execution when the turn starts
        self._waiters: list[asyncio.Future[None]] = []

    def append(self, event: TurnEvent, now: float) -> int:
        """Add the next event; returns its seq. Nothing is added after the terminal event."""
        if self.finished_at is not None:
            raise RuntimeError(f"turn {self.turn_id} already ended")
        self.events.append(event)
        if isinstance(event, TurnCompleted):
            self.status, self.message_count, self.finished_at = completed_status(event), event.message_count, now
        elif isinstance(event, TurnFailed):
            self.status, self.error, self.finished_at = STOPPED.get(event.error, "failed"), event.error, now
        if isinstance(event, TurnCompleted) and self.profile_version is None:  # a held message's (no run)
            self.profile_version = event.profile_version
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
        return len(self.events)

    def next_event(self) -> asyncio.Future[None]:
        """A future done at the next append (a waiter that is cancelled is skipped then)."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        return waiter

    async def wait(self, after: int) -> None:
        """Return once there is an event past seq ``after`` or the turn has ended."""
        while len(self.events) <= after and self.finished_at is None:
            waiter = self.next_event()
            try:
                await waiter
            finally:
                if not waiter.done():  # the reader was cancelled: forget its waiter
                    self._waiters.remove(waiter)


class TurnLog:
    """The in-process turn log (one process; a shared log goes behind the same methods)."""

    def __init__(self, retention_seconds: float, max_retained_events: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.retention_seconds = retention_seconds
        self.max_retained_events = max_retained_events
        self._clock = clock
        self._turns: dict[str, TurnRecord] = {}
        self._finished: OrderedDict[str, TurnRecord] = OrderedDict()  # in finishing order
        self._retained_events = 0
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._turns)

    @property
    def retained_events(self) -> int:
        """Events held by finished turns (the bounded part)."""
        return self._retained_events

    def open(self, turn: TurnRequested) -> TurnRecord:
        self._expire()
        record = self._turns[turn.turn_id] = TurnRecord(turn)
        return record

    def ended(self, turn: TurnRequested, events: Sequence[TurnEvent]) -> TurnRecord:
        """A turn that ended without running (a message held for a person): opened and given its
        events, the last one terminal, so it is found by its id like any other (A2A's GetTask) and
        kept as long; a shared log writes it through as it does a run turn's."""
        record = self.open(turn)
        for event in events:
            self.append(record, event)
        return record

    def get(self, tenant_id: str, session_id: str, turn_id: str) -> TurnRecord | None:
        """The turn if it is this tenant's and this session's and still retained; else None."""
        self._expire()
        record = self._turns.get(turn_id)
        if record is None or record.tenant_id != tenant_id or record.session_id != session_id:
            return None
        return record

    def retained(self, tenant_id: str) -> list[TurnRecord]:
        """This tenant's turns kept here, in the order they were opened."""
        self._expire()
        return [record for record in self._turns.values() if record.tenant_id == tenant_id]

    async def tasks(self, tenant_id: str) -> list[TurnView]:
        """This tenant's turns, newest first (A2A's ListTasks); a shared log lists those of every
        instance. A view may hold only its last event until ``catch_up``."""
        return list(reversed(self.retained(tenant_id)))

    async def find_task(self, tenant_id: str, turn_id: str) -> TurnView | None:
        """The turn by its id alone (an A2A task id names no session) if it is this tenant's;
        a shared log also finds turns that other instances run."""
        self._expire()
        record = self._turns.get(turn_id)
        return record if record is not None and record.tenant_id == tenant_id else None

    def start(self) -> None:
        """Nothing to start in one process (the shared log starts its writer here)."""
        return None

    async def close(self) -> None:
        return None

    def started(self, record: TurnRecord) -> None:
        record.status = "running"

    async def find(self, tenant_id: str, session_id: str, turn_id: str) -> TurnView | None:
        """``get`` for handlers: a shared log also finds turns that other instances run."""
        return self.get(tenant_id, session_id, turn_id)

    def append(self, record: TurnRecord, event: TurnEvent) -> int:
        now = self._clock()
        seq = record.append(event, now)
        if record.finished_at is not None:
            self._finished[record.turn_id] = record
            self._retained_events += len(record.events)
            self._expire()
        return seq

    def _expire(self) -> None:
        """Drop finished turns past their retention or over the event budget, oldest first."""
        if not self._finished:
            return
        cutoff = self._clock() - self.retention_seconds
        finished = self._finished
        while finished:
            oldest = next(iter(finished.values()))
            assert oldest.finished_at is not None
            if oldest.finished_at > cutoff and self._retained_events <= self.max_retained_events:
                break
            del finished[oldest.turn_id]
            del self._turns[oldest.turn_id]
            self._retained_events -= len(oldest.events)
            self.evicted += 1


# Filled by the topology (msev15.topology), which picks the in-process or the shared log.
TURNS: web.AppKey[TurnLog] = web.AppKey("msev15.turns")
