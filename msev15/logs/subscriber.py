"""The logging subscriber: one tenant-aware line per turn start, tool call and turn end.

Tokens are logged only at DEBUG (and then the subscription asks for them; otherwise the bus
never even queues them here).
"""

from __future__ import annotations

import asyncio
import logging

from msev15.events.bus import EventBus, Subscription
from msev15.events.types import (
    Token,
    ToolCalled,
    ToolFinished,
    TurnCompleted,
    TurnEvent,
    TurnFailed,
    TurnRequested,
)

log = logging.getLogger("api.chat")  # the spec's example lines come from "api.chat"


def _context(event: TurnEvent) -> dict[str, str]:
    # ``turn``: the tracing log filter finds the turn's trace by it (these lines are written later,
    # by this subscriber's task, outside the turn's span).
    return {"session": event.session_id, "tenant": event.tenant_id, "request_id": event.request_id,
            "turn": event.turn_id}


def log_event(event: TurnEvent) -> None:
    extra = _context(event)
    match event:
        case Token():
            log.debug("token %r", event.content, extra=extra)
        case TurnRequested():
            log.info("User message received", extra=extra)
            log.debug("message of %d chars, %s", len(event.message), "streamed" if event.stream else "json",
                      extra=extra)
        case ToolCalled():
            log.info("Tool call %s (%s)", event.name, event.call_id, extra=extra)
        case ToolFinished(ok=True):
            log.info("Tool result %s ok", event.name, extra=extra)
        case ToolFinished():
            log.warning("Tool result %s failed: %s", event.name, event.error, extra=extra)
        case TurnCompleted():
            log.info("Turn completed (%d messages in session)", event.message_count, extra=extra)
        case TurnFailed():
            log.warning("Turn failed: %s: %s", event.error, event.message, extra=extra)


class LoggingSubscriber:
    def __init__(self, bus: EventBus) -> None:
        # Ask the bus only for what this level writes: the queue costs nothing then.
        kinds: tuple[type[TurnEvent], ...] = (ToolFinished, TurnFailed)  # failures are WARNINGs
        if log.isEnabledFor(logging.INFO):
            kinds += (TurnRequested, ToolCalled, TurnCompleted)
        if log.isEnabledFor(logging.DEBUG):
            kinds += (Token,)
        self._sub: Subscription[TurnEvent] = bus.subscribe(kinds)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="events:log")

    async def _run(self) -> None:
        while True:
            log_event(await self._sub.get())

    async def close(self) -> None:
        """Stop, writing whatever is still queued first."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        while self._sub.pending():
            log_event(self._sub.get_nowait())
        self._sub.close()
