"""The in-process event bus.

``publish()`` is synchronous and never blocks: each subscription has its own unbounded queue, so
a slow subscriber (a slow SSE reader) only grows its own queue and never stalls the publisher or
its peers. Subscriptions are either global (optionally filtered by event type) or bound to one
turn; turn-bound ones are found by a dict lookup, keeping the per-token path O(1).

The bus also tracks turns in flight (from ``TurnRequested`` to their terminal event) so shutdown
can ``close()`` it to new turns and ``drain()`` what was already accepted.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from msev15.events.types import TERMINAL, TurnEvent, TurnRequested


class BusClosed(RuntimeError):
    """The bus accepts no new turns (the service is shutting down)."""


class Subscription:
    """One subscriber's queue: a list read from a moving head, and one waiter at a time.

    Lighter than ``asyncio.Queue`` (which keeps several internal deques per instance): with
    thousands of open streams the per-subscription cost shows up in RSS.
    """

    __slots__ = ("_bus", "_items", "_head", "_waiter", "types", "turn_id", "closed")

    def __init__(self, bus: EventBus, types: tuple[type, ...] | None, turn_id: str | None) -> None:
        self._bus = bus
        self._items: list[TurnEvent] = []
        self._head = 0
        self._waiter: asyncio.Future[None] | None = None
        self.types = types
        self.turn_id = turn_id
        self.closed = False

    def wants(self, kind: type) -> bool:
        return self.types is None or issubclass(kind, self.types)

    def deliver(self, event: TurnEvent) -> None:
        if self.types is None or isinstance(event, self.types):
            self._items.append(event)
            waiter = self._waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    async def get(self) -> TurnEvent:
        while self._head >= len(self._items):
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self.get_nowait()

    def get_nowait(self) -> TurnEvent:
        """The next event; IndexError when there is none."""
        items, head = self._items, self._head
        if head >= len(items):
            raise IndexError("no event pending")
        event = items[head]
        head += 1
        if head == len(items):  # caught up: start over, keeping the list short
            items.clear()
            head = 0
        elif head >= 1024 and head * 2 >= len(items):  # a slow reader: drop what was read
            del items[:head]
            head = 0
        self._head = head
        return event

    def pending(self) -> int:
        return len(self._items) - self._head

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._bus._unsubscribe(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    async def __aiter__(self) -> AsyncIterator[TurnEvent]:
        while True:
            yield await self.get()


class EventBus:
    def __init__(self) -> None:
        self._global: list[Subscription] = []
        self._by_turn: dict[str, list[Subscription]] = {}
        self._in_flight: set[str] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self.closed = False
        self.published = 0

    def subscribe(self, *, types: tuple[type, ...] | None = None, turn_id: str | None = None) -> Subscription:
        sub = Subscription(self, types, turn_id)
        if turn_id is None:
            self._global.append(sub)
        else:
            self._by_turn.setdefault(turn_id, []).append(sub)
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        if sub.turn_id is None:
            self._global.remove(sub)
            return
        subs = self._by_turn.get(sub.turn_id)
        if subs is not None:
            subs.remove(sub)
            if not subs:
                del self._by_turn[sub.turn_id]

    def publish(self, event: TurnEvent) -> None:
        """Deliver to every matching subscription. Raises BusClosed for new turns after close()."""
        if type(event) is TurnRequested:
            if self.closed:
                raise BusClosed("the service is shutting down")
            self._in_flight.add(event.turn_id)
            self._idle.clear()
        self.published += 1
        for sub in self._global:
            sub.deliver(event)
        subs = self._by_turn.get(event.turn_id)
        if subs:
            for sub in subs:
                sub.deliver(event)
        if isinstance(event, TERMINAL):
            self._in_flight.discard(event.turn_id)
            if not self._in_flight:
                self._idle.set()

    def wants(self, kind: type, turn_id: str) -> bool:
        """Does any subscription take events of ``kind`` for this turn? (Skip building them if not.)"""
        return any(sub.wants(kind) for sub in self._global) or any(
            sub.wants(kind) for sub in self._by_turn.get(turn_id, ()))

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def close(self) -> None:
        """Refuse new turns; turns already accepted go on."""
        self.closed = True

    async def drain(self, timeout: float | None = None) -> bool:
        """Wait until every accepted turn has ended. True if drained within ``timeout``."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True
