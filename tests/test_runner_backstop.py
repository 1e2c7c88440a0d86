"""The runner's backstop: a turn its task left open is still ended, once, for every reader.

``AgentRunner._run_held`` ends every turn on each path it knows (completion, stop, model, store
and tool failures, any ``Exception``). What none of them catches is a ``BaseException`` that is
neither an ``Exception`` nor a plain ``CancelledError``: for instance the ``BaseExceptionGroup``
an anyio task group raises when a cancellation meets a failure inside a model client. No code of
ours raises one, so the model is the test double here (injected through ``create_app``'s
``provider``, as the benchmarks do): it streams a token, waits until the test has its readers
attached, then fails that way. The backstop must end the turn with one ``internal_error`` event
for each reader, and the session must take its next turn.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from msev15.agent.context import RUNNER
from msev15.agent.providers.base import ModelReply, ProbeStatus
from msev15.app import create_app
from tests.conftest import make_settings, sse_events

READ_BOUND = 15.0  # only so a reader left waiting fails the test instead of hanging it


class _TornDownModel:
    """First request: one token, then (once ``release`` is set) the task-group failure.
    Later requests answer normally."""

    name = "torn-down"
    model = "test-double"

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.requests = 0

    async def stream(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]
                     ) -> AsyncIterator[str | ModelReply]:
        self.requests += 1
        if self.requests == 1:
            yield "Let me "
            await self.release.wait()
            raise BaseExceptionGroup("model client task group", [asyncio.CancelledError()])
        yield "All good."
        yield ModelReply("All good.")

    async def probe(self) -> ProbeStatus:
        return "healthy"

    async def close(self) -> None:
        pass


async def _read_body(resp: ClientResponse) -> str:
    async with asyncio.timeout(READ_BOUND):
        return (await resp.read()).decode()


async def test_a_turn_its_task_left_open_ends_once_for_every_reader(
        aiohttp_client: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    model = _TornDownModel()
    client: TestClient[Any, Any] = await aiohttp_client(await create_app(make_settings(tmp_path), provider=model))
    runner = client.app[RUNNER]

    first = await client.post("/api/v1/chat/stream", json={"session_id": "s", "message": "hello"})
    assert first.status == 200
    turn_id = first.headers["X-Turn-ID"]
    async with asyncio.timeout(READ_BOUND):
        head = [await first.content.readline() for _ in range(3)]  # id, data, blank: the token
    assert head[0].decode().strip() == f"id: {turn_id}:1"

    events_url = f"/api/v1/sessions/s/turns/{turn_id}/events"
    replay = await client.get(events_url)
    resumed = await client.get(events_url, headers={"Last-Event-ID": f"{turn_id}:1"})
    aisdk = await client.get("/api/v1/ai-sdk/chat/s/stream")
    assert replay.status == resumed.status == aisdk.status == 200
    async with asyncio.timeout(READ_BOUND):
        assert (await replay.content.readline()).decode().strip() == f"id: {turn_id}:1"  # attached
    assert runner.open_turns == 1

    with caplog.at_level(logging.ERROR, logger="agent.runner"):
        model.release.set()
        bodies = [(b"".join(head)).decode() + await _read_body(first), f"id: {turn_id}:1\n" + await _read_body(replay),
                  await _read_body(resumed)]
        aisdk_body = await _read_body(aisdk)

    for body in bodies:
        events = sse_events(body)
        terminal = [e for e in events if e["type"] in ("done", "error")]
        assert terminal == [events[-1]], events
        assert terminal[0]["error"] == "internal_error" and terminal[0]["turn_id"] == turn_id
    assert [e["type"] for e in sse_events(bodies[2])] == ["error"]  # after seq 1: only the end
    assert aisdk_body.count('"type": "error"') == 1 and aisdk_body.endswith("data: [DONE]\n\n"), aisdk_body
    assert f"turn {turn_id} left open by its task; ending it" in caplog.text  # the backstop ended it

    # Nothing of the turn stays open, and the session takes its next turn at once.
    assert runner.open_turns == 0 and runner.running == 0
    status = await client.get(f"/api/v1/sessions/s/turns/{turn_id}")
    assert (await status.json())["status"] == "failed"
    nxt = await client.post("/api/v1/chat", json={"session_id": "s", "message": "again", "if_busy": "reject"})
    assert nxt.status == 200, await nxt.text()
    assert (await nxt.json())["message_count"] == 2  # the failed turn left nothing in the history


async def _started(client: TestClient, session: str) -> Any:
    """A turn accepted and handed a task by the scheduler, whose task has not run a step yet
    (nothing below awaits between the publish and the return)."""
    from msev15.handlers.chat import start_turn

    record = await start_turn(client.app, "default", session, "hello", stream=True)
    assert client.app[RUNNER].running == 1 and not record.events
    return record


@pytest.mark.parametrize(("hard", "reason"), [(False, "cancelled"), (True, "shutting_down")])
async def test_a_turn_stopped_before_its_task_ran_still_ends_once(aiohttp_client: Any, tmp_path: Path,
                                                                  hard: bool, reason: str) -> None:
    """A stop can reach a turn the scheduler just started (a session cancel relayed from another
    instance lands right after the previous turn ended): a task cancelled before its first step
    never runs the code that ends the turn, and its readers waited forever."""
    client: TestClient = await aiohttp_client(await create_app(make_settings(tmp_path)))
    record = await _started(client, "s-stop")
    assert client.app[RUNNER].stop(record, reason, hard=hard)
    async with asyncio.timeout(READ_BOUND):
        outcome = await record.outcome()
    assert (type(outcome).__name__, outcome.error) == ("TurnFailed", reason)
    assert [type(e).__name__ for e in record.events] == ["TurnFailed"]  # one end, nothing else
    reply = await client.post("/api/v1/chat", json={"session_id": "s-stop", "message": "again"})
    assert reply.status == 200  # the session takes its next turn
