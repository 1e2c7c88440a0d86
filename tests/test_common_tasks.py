"""Stopping background tasks and closing clients so that a shutdown cannot hang on them."""

from __future__ import annotations

import asyncio
import logging

import pytest

from msev15.common.tasks import close_within, stop_task

GUARD = 10.0  # against a hang, never a measure


async def test_a_task_that_swallows_a_cancel_is_cancelled_again_until_it_ends() -> None:
    """A library catching CancelledError mid-call would make one cancel() wait forever."""
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                swallowed += 1
                if swallowed == 3:
                    raise

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    await asyncio.wait_for(stop_task(task, every=0.01), GUARD)
    assert task.cancelled() and swallowed == 3


async def test_stopping_an_ended_or_missing_task_returns_at_once() -> None:
    async def fails() -> None:
        raise ValueError("boom")

    task = asyncio.create_task(fails())
    await asyncio.wait({task})
    await stop_task(task)
    await stop_task(None)
    assert isinstance(task.exception(), ValueError)


async def test_a_close_that_never_ends_is_left_behind_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    with caplog.at_level(logging.WARNING, logger="app"):
        await asyncio.wait_for(close_within(never, "a stuck client", seconds=0.01), GUARD)
    assert never.cancelled()
    assert "a stuck client did not close" in caplog.text
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    done.set_result(None)
    await close_within(done, "a quick client")
