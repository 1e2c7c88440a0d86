"""Keeps the index of completed turns that answer feedback is checked against (store/feedback.py).

A synchronous bus handler notes each ``TurnCompleted`` the runner publishes anyway (a list append),
and this task writes them in batches every :data:`FLUSH_SECONDS`, or at once when :data:`BATCH`
wait: a turn pays no task switch for it. A turn is ratable meanwhile through the turn log (its
stream is retained). If the store fails, the batch is logged and dropped: those turns can still
be rated while their stream is retained.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

from aiohttp import web

from msev15.events.bus import EventBus
from msev15.events.context import BUS
from msev15.events.types import TurnCompleted
from msev15.store.feedback import FEEDBACK, CompletedTurn, FeedbackStore

log = logging.getLogger("feedback")

BATCH = 500
FLUSH_SECONDS = 0.25


class CompletedTurns:
    def __init__(self, bus: EventBus, store: FeedbackStore) -> None:
        self._store = store
        self._pending: list[TurnCompleted] = []
        self._full = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        bus.on(TurnCompleted, self._completed)

    def _completed(self, event: TurnCompleted) -> None:
        self._pending.append(event)
        if len(self._pending) == BATCH:
            self._full.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="feedback:turns")

    def _batch(self) -> list[CompletedTurn]:
        now = time.time()
        events, self._pending = self._pending[:BATCH], self._pending[BATCH:]
        return [CompletedTurn(e.tenant_id, e.session_id, e.turn_id, now) for e in events]

    async def _write(self, batch: list[CompletedTurn]) -> None:
        try:
            await self._store.remember(batch)
        except Exception as exc:  # the turns stay ratable while their stream is retained
            log.warning("could not index %d completed turns for feedback: %s", len(batch), exc)

    async def _run(self) -> None:
        """Write a batch when one is full or every FLUSH_SECONDS; end after the write that follows
        ``close``. Stopped by a flag, not by cancellation: on Python 3.11 a cancel that lands while
        ``asyncio.timeout`` expires can be turned into the TimeoutError this loop waits for, and
        the task then waited for ever (an app's shutdown hung on it)."""
        loop = asyncio.get_running_loop()
        while True:
            tick = loop.call_later(FLUSH_SECONDS, self._full.set)
            try:
                await self._full.wait()
            finally:
                tick.cancel()
            self._full.clear()
            while self._pending:
                await self._write(self._batch())
            if self._stopping:
                return

    async def close(self) -> None:
        """Stop; write what is still noted first (the runner stopped before: nothing comes after).
        Each write is bounded by the store's own timeouts (a failure is logged)."""
        self._stopping = True
        self._full.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        while self._pending:
            await self._write(self._batch())


async def completed_turns_ctx(app: web.Application) -> AsyncIterator[None]:
    """After the topology (the store), before the runner: stops after the runner's last turn."""
    index = CompletedTurns(app[BUS], app[FEEDBACK])
    index.start()
    yield
    await index.close()
