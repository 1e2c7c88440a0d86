"""Stopping a background task and closing a client without hanging a shutdown."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any

log = logging.getLogger("app")

RECANCEL_SECONDS = 1.0
CLOSE_SECONDS = 5.0


async def stop_task(task: asyncio.Task[Any] | None, every: float = RECANCEL_SECONDS) -> None:
    """Cancel ``task`` and wait until it has ended. A library that catches CancelledError in the
    middle of a call (and goes on) would make one cancel() wait forever: cancel again every
    ``every`` seconds until the task is done."""
    if task is None:
        return
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=every)
    if not task.cancelled() and task.exception() is not None:
        log.debug("task %s ended with %r", task.get_name(), task.exception())


async def close_within(closing: Awaitable[Any], what: str, seconds: float = CLOSE_SECONDS) -> None:
    """Await a client's close, at most ``seconds``: a shutdown goes on without it past that."""
    try:
        await asyncio.wait_for(closing, seconds)
    except TimeoutError:
        log.warning("%s did not close within %g s; going on", what, seconds)
