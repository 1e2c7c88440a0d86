"""The in-process event bus: fan-out only.

``publish()`` is synchronous and never blocks. Two kinds of listeners:

- a *handler* (``on(kind, callback)``) is called inside ``publish`` for events of its kind, before
  anything else sees them, and may refuse the event by raising: that is how the agent runner
  takes a ``TurnRequested`` (and refuses it while shutting down) with no task in between;
- a *subscription* (``subscribe(kinds)``) has its own queue, so a slow subscriber (the log writer,
  metrics) only grows its own queue and never stalls the publisher or its peers.

A turn's client events are not read from here: readers follow the turn log (events/turnlog.py),
which the runner appends to before it publishes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from msev15.events.types import TurnEvent

E = TypeVar("E", bound=TurnEvent)


class Subscription(Generic[E]):
    """One subscriber's queue: a list read from a moving head, and one waiter at a time.

    Lighter than ``asyncio.Queue`` (which keeps several internal deques per instance).
    """

    __slots__ = ("_bus", "_items", "_head", "_waiter", "kinds", "closed")

    def __init__(self, bus: EventBus, kinds: tuple[type[E], ...]) -> None:
        self._bus = bus
        self._items: list[E] = []
        self._head = 0
        self._waiter: asyncio.Future[None] | None = None
        self.kinds = kinds
        self.closed = False

    def deliver(self, event: E) -> None:
        self._items.append(event)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> E:
        while self._head >= len(self._items):
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self.get_nowait()

    def get_nowait(self) -> E:
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

    def backlog(self) -> int:
        """Entries held in memory, read or not (what compaction keeps small)."""
        return len(self._items)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._bus._unsubscribe(self)

    def __enter__(self) -> Subscription[E]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventBus:
    def __init__(self) -> None:
        self._subs: list[Subscription[Any]] = []
        self._handlers: dict[type[TurnEvent], list[Callable[[Any], None]]] = {}
        self.published = 0

    def on(self, kind: type[E], handler: Callable[[E], None]) -> None:
        """Call ``handler`` synchronously for each published event of exactly ``kind``."""
        self._handlers.setdefault(kind, []).append(handler)

    def subscribe(self, kinds: tuple[type[E], ...]) -> Subscription[E]:
        sub: Subscription[E] = Subscription(self, kinds)
        self._subs.append(sub)
        return sub

    def _unsubscribe(self, sub: Subscription[Any]) -> None:
        self._subs.remove(sub)

    def publish(self, event: TurnEvent) -> None:
        """Run the handlers of the event's kind (their exceptions reach the publisher, and the
        event then goes no further), then queue it for every matching subscription."""
        handlers = self._handlers.get(type(event))
        if handlers:
            for handler in handlers:
                handler(event)
        self.published += 1
        for sub in self._subs:
            if isinstance(event, sub.kinds):
                sub.deliver(event)
