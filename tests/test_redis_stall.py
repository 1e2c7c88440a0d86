"""A Redis stall (redis-server paused with SIGSTOP past the client's command timeout) never wedges a
session. The request that gave up gets 503 ``store_unavailable`` with Retry-After; Redis then runs
the admit the request had queued, leaving an entry in the session's queue owned by a live
instance for a turn nobody runs. That entry must be found and released: the next turn of the
session runs (``if_busy=reject`` and ``enqueue``), and a session cancel frees the session whatever
its queue holds. Readiness reports the stall and recovers by itself."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient

from msev15.store.base import StoreUnavailable
from msev15.store.redis_kit import COMMAND_TIMEOUT_SECONDS, tenant_key
from msev15.store.redis_pending import RedisPendingCalls
from tests.conftest import assert_envelope, make_settings
from tests.llm_server import Reply, ScriptedLLM
from tests.redis_server import RedisServer
from tests.test_pending_stores import paused

QUEUE = tenant_key("default", "queue", "s")


@pytest.fixture
async def client(aiohttp_client: Any, tmp_path: Path, redis: RedisServer, llm: ScriptedLLM) -> TestClient:
    from msev15.app import create_app

    # HANDOFF_ENABLED=false: a chat's first Redis call must be its admit (the wedge these tests
    # reproduce); with the handoff on, a chat reads the session's mode first, and a stall refuses
    # it there (503) before any admit is sent.
    settings = make_settings(tmp_path / "a", session_store="redis", redis_url=redis.url, llm_provider="openai",
                             openai_base_url=f"{llm.url}/v1", llm_max_retries=0, handoff_enabled=False)
    client: TestClient = await aiohttp_client(await create_app(settings))
    return client


async def _queue(redis: RedisServer) -> list[str]:
    direct = aioredis.Redis.from_url(redis.url, decode_responses=True)
    try:
        return [str(entry) for entry in await direct.lrange(QUEUE, 0, -1)]
    finally:
        await direct.aclose()


async def _wedge(client: TestClient, redis: RedisServer) -> None:
    """Stall Redis through a chat: the chat gives up with 503, and its queued admit lands later."""
    assert (await client.post("/api/v1/chat", json={"session_id": "s", "message": "before"})).status == 200
    redis.pause()
    try:
        resp = await client.post("/api/v1/chat", json={"session_id": "s", "message": "during the stall"})
        assert resp.status == 503
        assert_envelope(await resp.json(), "store_unavailable")
        assert int(resp.headers["Retry-After"]) >= 1
        ready = await client.get("/health/readiness")  # answers while Redis stalls, and says so
        assert ready.status == 503
        assert (await ready.json())["checks"]["session_store"] == "unavailable"
    finally:
        redis.resume()
    deadline = time.monotonic() + 10
    while not await _queue(redis):  # Redis runs the admit the gave-up request had sent
        assert time.monotonic() < deadline, "the stalled admit never ran: the wedge was not reproduced"
        await asyncio.sleep(0.02)
    while (await client.get("/health/readiness")).status != 200:  # readiness recovers by itself
        assert time.monotonic() < deadline, "readiness did not recover"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("if_busy", ["reject", "enqueue"])
async def test_the_session_works_again_after_a_stall(client: TestClient, redis: RedisServer, if_busy: str) -> None:
    await _wedge(client, redis)
    resp = await asyncio.wait_for(
        client.post("/api/v1/chat", json={"session_id": "s", "message": "after", "if_busy": if_busy}), 10)
    assert resp.status == 200, await resp.text()
    assert await _queue(redis) == []


async def test_a_session_cancel_frees_a_queue_left_by_a_stall(client: TestClient, redis: RedisServer) -> None:
    await _wedge(client, redis)
    cancel = await client.post("/api/v1/sessions/s/cancel")
    assert cancel.status == 202
    assert await _queue(redis) == []
    resp = await client.post("/api/v1/chat", json={"session_id": "s", "message": "after", "if_busy": "reject"})
    assert resp.status == 200, await resp.text()


async def test_a_stream_running_into_a_stall_ends_with_one_terminal_event(client: TestClient, redis: RedisServer,
                                                                          llm: ScriptedLLM) -> None:
    gate = asyncio.Event()
    llm.push(Reply("held until Redis stalls", gate=gate, gate_after=2))
    resp = await client.post("/api/v1/chat/stream", json={"session_id": "s", "message": "stream"})
    assert resp.status == 200
    deadline = time.monotonic() + 10
    while llm.streams_started < 1:  # the turn is running: the model holds it
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    redis.pause()
    try:
        gate.set()
        # An answer while Redis is still stalled. The bound only guards against a hang: six command
        # timeouts (the writer's retries of a batch took eight, and the end waited behind them).
        body = await asyncio.wait_for(resp.text(), 6 * COMMAND_TIMEOUT_SECONDS)
    finally:
        redis.resume()
    events = [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: ")]
    kinds = [e["type"] for e in events]
    assert kinds.count("done") + kinds.count("error") == 1 and kinds[-1] in ("done", "error"), kinds
    if kinds[-1] == "error":
        assert events[-1]["error"] == "store_unavailable" and events[-1]["retry_after"] >= 1
    after = await asyncio.wait_for(client.post("/api/v1/chat", json={"session_id": "s", "message": "after"}), 30)
    assert after.status == 200, await after.text()


async def _drained(redis: RedisServer) -> None:
    """Redis has run every command sent to it before it resumed: a command sent on a new connection
    after the resume is read in a later turn of its event loop than the ones already waiting in
    its sockets, so its answer comes after theirs have run."""
    fresh = aioredis.Redis.from_url(redis.url, decode_responses=True)
    try:
        assert await fresh.ping()
    finally:
        await fresh.aclose()


@pytest.mark.slow  # waits out a command timeout
async def test_a_commit_a_stall_holds_past_its_deadline_never_lands(client: TestClient, redis: RedisServer,
                                                                    llm: ScriptedLLM) -> None:
    """The turn's client gets 503; Redis, resumed, runs the commit it held: the script refuses it,
    so the turn its client was told failed is not in the history."""
    assert (await client.post("/api/v1/chat", json={"session_id": "s", "message": "before"})).status == 200
    gate = asyncio.Event()
    llm.push(Reply("an answer the client never gets", gate=gate, gate_after=1))
    chat = asyncio.create_task(client.post("/api/v1/chat", json={"session_id": "s", "message": "during the stall"}))
    deadline = time.monotonic() + 10
    while llm.streams_started < 2:  # the turn is admitted and running: the model holds it
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    redis.pause()
    try:
        gate.set()  # the answer is complete: the commit goes to the stalled Redis
        resp = await asyncio.wait_for(chat, 6 * COMMAND_TIMEOUT_SECONDS)
        assert resp.status == 503
        assert_envelope(await resp.json(), "store_unavailable")
    finally:
        redis.resume()
    await _drained(redis)
    direct = aioredis.Redis.from_url(redis.url, decode_responses=True)
    try:
        stored = [json.loads(m)[1] for m in await direct.lrange(tenant_key("default", "msgs", "s"), 0, -1)]
    finally:
        await direct.aclose()
    assert "before" in stored
    assert "during the stall" not in stored and "an answer the client never gets" not in stored, stored
    history = await client.get("/api/v1/sessions/s/history")
    assert "during the stall" not in await history.text()
    after = await asyncio.wait_for(client.post("/api/v1/chat", json={"session_id": "s", "message": "after"}), 30)
    assert after.status == 200, await after.text()


@pytest.mark.slow  # waits out a command timeout
async def test_a_pause_a_stall_holds_past_its_deadline_leaves_no_waiting_calls(redis: RedisServer) -> None:
    """A turn's pause (its waiting calls) sent into a stall: the request gives up, the turn ends
    store_unavailable; Redis, resumed, runs the script, which refuses it."""
    store = RedisPendingCalls.open(redis.url)
    try:
        later = time.time() + 3600  # the hashes would expire at once for a step expired long ago
        await store.pause(paused("before", expires_at=later))  # connected, Redis's clock sampled
        redis.pause()
        try:
            with pytest.raises(StoreUnavailable):
                await asyncio.wait_for(store.pause(paused("s1", expires_at=later)), 6 * COMMAND_TIMEOUT_SECONDS)
        finally:
            redis.resume()
        await _drained(redis)
        assert await store.get("t1", "s1") is None
        assert await store.get("t1", "before") is not None
    finally:
        await store.close()
