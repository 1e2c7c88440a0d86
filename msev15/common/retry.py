"""Retrying with exponential backoff: the one loop behind every "try again" in the project.

Mail sent by the agent's email tools and by the escalation server goes through :func:`retry`:
up to ``attempts`` tries, waiting ``base_delay`` x 1, 2, 4 ... between them, and only after a
failure the caller calls retryable. An optional ``deadline`` (event-loop time) bounds the whole:
an attempt is cut when it is reached, and no retry starts whose backoff would end past it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def retry(
    attempt: Callable[[int], Awaitable[T]],
    *,
    attempts: int,
    base_delay: float,
    retryable: Callable[[Exception], bool],
    log: logging.Logger,
    what: str,
    deadline: float | None = None,
    on_failure: Callable[[int, Exception], Awaitable[None]] | None = None,
) -> T:
    """``await attempt(n)`` for n = 1, 2 ... until one returns; its result is returned.

    A failure the caller deems ``retryable`` is tried again after ``base_delay * 2 ** (n - 1)``
    seconds (logged as a warning naming ``what``), up to ``attempts`` tries. ``on_failure(n, exc)``
    is awaited after every failed attempt, before deciding whether to retry.

    The last failure is raised as it came. An attempt cut at the ``deadline`` raises
    ``TimeoutError``; so does a deadline already past before the first attempt (then
    ``on_failure`` is never called). ``ValueError`` if ``attempts`` is less than 1.
    """
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1, got {attempts}")
    loop = asyncio.get_running_loop()
    last: Exception | None = None
    for n in range(1, attempts + 1):
        if deadline is not None and deadline <= loop.time():
            break
        try:
            async with asyncio.timeout_at(deadline):
                return await attempt(n)
        except Exception as exc:
            last = exc
            if on_failure is not None:
                await on_failure(n, exc)
            if not retryable(exc) or n >= attempts:
                raise
            delay = base_delay * 2 ** (n - 1)
            if deadline is not None and loop.time() + delay >= deadline:
                raise
            log.warning("%s attempt %d/%d failed (%s); retrying in %.2gs", what, n, attempts, exc, delay)
        await asyncio.sleep(delay)
    if last is None:
        raise TimeoutError("the deadline passed before the first attempt")
    raise last
