"""Keeps the index of completed turns that answer feedback is checked against (store/feedback.py).

A bus subscriber: the runner only queues the ``TurnCompleted`` it publishes anyway, and this task
writes the turns in batches, so a turn pays nothing for it. If the store fails, the batch is
logged and dropped: those turns can still be rated while their stream is retained.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

from aiohttp import web

from msev15.events.bus import EventBus, Subscription
from msev15.events.context import BUS
from msev15.events.types import TurnCompleted
from msev15.store.feedback import FEEDBACK, CompletedTurn, FeedbackStore

log = logging.getLogger("feedback")

BATCH = 500


class CompletedTurns:
    def __init__(self, bus: EventBus, store: FeedbackStore) -> None:
        self._sub: Subscription[TurnCompleted] = bus.subscribe((TurnCompleted,))
        self._store = store
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="feedback:turns")

    def _batch(self, first: TurnCompleted) -> list[CompletedTurn]:
        now = time.time()
        events = [first]
        while self._sub.pending() and len(events) < BATCH:
            events.append(self._sub.get_nowait())
        return [CompletedTurn(e.tenant_id, e.session_id, e.turn_id, now) for e in events]

    async def _write(self, batch: list[CompletedTurn]) -> None:
        try:
            await self._store.remember(batch)
        except Exception as exc:  # the turns stay ratable while their stream is retained
            log.warning("could not index %d completed turns for feedback: %s", len(batch), exc)

    async def _run(self) -> None:
        while True:
            await self._write(self._batch(await self._sub.get()))

    async def close(self) -> None:
        """Stop; write what is still queued first."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        while self._sub.pending():
            await self._write(self._batch(self._sub.get_nowait()))
        self._sub.close()


async def completed_turns_ctx(app: web.Application) -> AsyncIterator[None]:
    """After the topology (the store), before the runner: stops after the runner's last turn."""
    index = CompletedTurns(app[BUS], app[FEEDBACK])
    index.start()
    yield
    await index.close()
