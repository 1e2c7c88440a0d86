"""Two instances on one Redis (SESSION_STORE=redis): any instance serves any session, resumes any
stream, cancels any turn, and a session's turns run one at a time in arrival order across them.

Both instances are real apps built with create_app in this process (each with its own runner,
turn log mirror and coordination), against a real redis-server on a loopback port; the
subprocess tests (a killed instance, a shared rate limit) are in test_redis_processes.py.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from msev15.events.turnlog import TURNS
from tests.complaints.server import eventually
from tests.conftest import assert_envelope, make_settings
from tests.llm_server import Reply, ScriptedLLM
from tests.redis_server import RedisServer
from tests.test_streams import frames


async def _history(client: TestClient, session: str, tenant: str = "default") -> list[tuple[str, str]]:
    resp = await client.get(f"/api/v1/sessions/{session}/history?tenant_id={tenant}")
    if resp.status == 404:
        return []
    return [(m["role"], m["content"]) for m in (await resp.json())["messages"]]


async def test_chat_on_a_then_history_list_and_delete_on_b(pair: Any, llm: ScriptedLLM) -> None:
    a, b = await pair()
    llm.push(Reply("first answer"), Reply("second answer"))
    assert (await a.post("/api/v1/chat", json={"session_id": "s", "message": "one", "tenant_id": "t1"})).status == 200
    reply = await (await b.post("/api/v1/chat", json={"session_id": "s", "message": "two", "tenant_id": "t1"})).json()
    assert reply["message_count"] == 4
    assert await _history(a, "s", "t1") == [("user", "one"), ("assistant", "first answer"),
                                             ("user", "two"), ("assistant", "second answer")]
    # the second turn's model request saw the first turn, written by the other instance
    assert [m["role"] for m in llm.requests[1]["messages"]] == ["system", "user", "assistant", "user"]
    listing = await (await b.get("/api/v1/sessions?tenant_id=t1")).json()
    assert listing["total"] == 1 and listing["sessions"][0]["message_count"] == 4
    assert (await (await a.get("/api/v1/sessions?tenant_id=t2")).json())["total"] == 0  # tenants stay apart
    assert (await b.get("/api/v1/sessions/s/history?tenant_id=t2")).status == 404
    deleted = await b.delete("/api/v1/sessions/s?tenant_id=t1")
    assert (await deleted.json())["messages_deleted"] == 4
    assert (await a.get("/api/v1/sessions/s/history?tenant_id=t1")).status == 404


async def test_turns_from_both_instances_run_one_at_a_time_in_arrival_order(pair: Any, llm: ScriptedLLM) -> None:
    a, b = await pair()
    gate = asyncio.Event()
    llm.push(Reply("answer 0", gate=gate, gate_after=1), *(Reply(f"answer {i}") for i in range(1, 6)))
    streams = []
    for i in range(6):  # alternate instances; each request is sent once the previous one is accepted
        client = (a, b)[i % 2]
        streams.append(await client.post("/api/v1/chat/stream", json={"session_id": "s", "message": f"m{i}"}))
    await eventually(lambda: llm.streams_started == 1, "the first turn to reach the model")
    gate.set()
    ends = [[d for _, d in await frames(s)][-1] for s in streams]
    assert [e["message_count"] for e in ends] == [2, 4, 6, 8, 10, 12]
    assert llm.max_active == 1  # never two turns of the session at once, across instances
    assert [r["messages"][-1]["content"] for r in llm.requests] == [f"m{i}" for i in range(6)]
    assert [c for _, c in await _history(b, "s")] == [x for i in range(6) for x in (f"m{i}", f"answer {i}")]


async def test_a_stream_started_on_a_resumes_on_b(pair: Any, llm: ScriptedLLM) -> None:
    a, b = await pair()
    gate = asyncio.Event()
    llm.push(Reply("one two three four five", gate=gate, gate_after=3))
    resp = await a.post("/api/v1/chat/stream", json={"session_id": "s", "message": "hi"})
    turn_id = resp.headers["X-Turn-ID"]
    first = await frames(resp, limit=2)
    resp.close()
    status = await (await b.get(f"/api/v1/sessions/s/turns/{turn_id}")).json()
    assert status["status"] == "running"
    resumed = await b.get(f"/api/v1/sessions/s/turns/{turn_id}/events", headers={"Last-Event-ID": first[-1][0]})
    assert resumed.status == 200
    gate.set()
    rest = await frames(resumed)
    together = first + rest
    assert [i for i, _ in together] == [f"{turn_id}:{n}" for n in range(1, len(together) + 1)]
    assert "".join(d["content"] for _, d in together if d["type"] == "token") == "one two three four five"
    assert [d["type"] for _, d in together].count("done") == 1
    # after the end, the whole turn replays from either instance, identically
    assert await frames(await b.get(f"/api/v1/sessions/s/turns/{turn_id}/events")) == together
    assert await frames(await a.get(f"/api/v1/sessions/s/turns/{turn_id}/events")) == together
    other = await b.get(f"/api/v1/sessions/s/turns/{turn_id}/events?tenant_id=intruder")
    assert other.status == 404


async def test_cancel_and_if_busy_work_from_the_other_instance(pair: Any, llm: ScriptedLLM) -> None:
    a, b = await pair()
    gate = asyncio.Event()
    llm.push(Reply("held answer", gate=gate, gate_after=1))
    resp = await a.post("/api/v1/chat/stream", json={"session_id": "s", "message": "one"})
    turn_id = resp.headers["X-Turn-ID"]
    await eventually(lambda: llm.streams_started == 1, "the turn to reach the model")
    busy = await b.post("/api/v1/chat", json={"session_id": "s", "message": "two", "if_busy": "reject"})
    assert busy.status == 409 and busy.headers["Retry-After"]
    assert_envelope(await busy.json(), "session_busy")
    cancel = await b.post(f"/api/v1/sessions/s/turns/{turn_id}/cancel")
    assert cancel.status == 202
    ends = [d for _, d in await frames(resp)]
    assert ends[-1]["type"] == "error" and ends[-1]["error"] == "cancelled"
    again = await b.post(f"/api/v1/sessions/s/turns/{turn_id}/cancel")
    assert again.status == 409
    # interrupt from B stops a turn running on A, then runs
    gate2 = asyncio.Event()
    llm.push(Reply("old", gate=gate2, gate_after=1), Reply("newest"))
    held = await a.post("/api/v1/chat/stream", json={"session_id": "s", "message": "three"})
    await eventually(lambda: llm.streams_started == 2, "the held turn to reach the model")
    new = await b.post("/api/v1/chat", json={"session_id": "s", "message": "four", "if_busy": "interrupt"})
    assert new.status == 200, await new.text()
    assert [d for _, d in await frames(held)][-1]["error"] == "interrupted"
    assert not llm.rejected
    assert await _history(a, "s") == [("user", "four"), ("assistant", "newest")]


async def test_session_cancel_from_b_counts_turns_on_a(pair: Any, llm: ScriptedLLM) -> None:
    a, b = await pair()
    gate = asyncio.Event()
    llm.push(Reply("held", gate=gate, gate_after=1))
    first = await a.post("/api/v1/chat/stream", json={"session_id": "s", "message": "one"})
    second = await a.post("/api/v1/chat/stream", json={"session_id": "s", "message": "two"})
    await eventually(lambda: llm.streams_started == 1, "the first turn to reach the model")
    cancelled = await (await b.post("/api/v1/sessions/s/cancel")).json()
    assert cancelled == {"session_id": "s", "cancelled": 2}
    for resp in (first, second):
        assert [d for _, d in await frames(resp)][-1]["error"] == "cancelled"


async def test_redis_down_at_start_then_back(aiohttp_client: Any, tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis")  # not started yet
    settings = make_settings(tmp_path, session_store="redis", redis_url=server.url)
    from msev15.app import create_app

    client = await aiohttp_client(await create_app(settings))  # starts without Redis
    ready = await client.get("/health/readiness")
    assert ready.status == 503
    body = await ready.json()
    assert body["status"] == "not_ready" and body["checks"]["session_store"] == "unavailable"
    for method, path, payload in (("POST", "/api/v1/chat", {"session_id": "s", "message": "hi"}),
                                  ("POST", "/api/v1/chat/stream", {"session_id": "s", "message": "hi"}),
                                  ("GET", "/api/v1/sessions", None), ("GET", "/api/v1/sessions/s/history", None),
                                  ("DELETE", "/api/v1/sessions/s", None)):
        resp = await client.request(method, path, json=payload)
        assert resp.status == 503, (path, await resp.text())
        assert_envelope(await resp.json(), "store_unavailable")
        assert resp.headers["Retry-After"]
    await server.start()
    try:  # it reconnects by itself
        async def ready_again() -> bool:
            return (await client.get("/health/readiness")).status == 200

        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while not await ready_again():
            assert loop.time() < deadline, "readiness never came back"
            await asyncio.sleep(0.05)
        assert (await client.post("/api/v1/chat", json={"session_id": "s", "message": "hi"})).status == 200
        assert len(await _history(client, "s")) == 2
    finally:
        server.stop()


async def test_redis_lost_mid_turn_ends_the_turn_and_writes_nothing(pair: Any, llm: ScriptedLLM,
                                                                  redis: RedisServer) -> None:
    a, _ = await pair()
    gate = asyncio.Event()
    llm.push(Reply("never saved", gate=gate, gate_after=1))
    resp = await a.post("/api/v1/chat/stream", json={"session_id": "s", "message": "hi"})
    await eventually(lambda: llm.streams_started == 1, "the turn to reach the model")
    redis.stop()
    gate.set()
    events = [d for _, d in await frames(resp)]
    assert events[-1]["type"] == "error" and events[-1]["error"] in ("store_unavailable", "turn_lost")
    assert [e["type"] for e in events].count("error") == 1
    await redis.start()
    assert await _history(a, "s") == []  # nothing half-written


def test_redis_url_is_required_for_the_redis_store(tmp_path: Path) -> None:
    from msev15.common.env import SettingsError
    from msev15.config import Settings

    with pytest.raises(SettingsError, match="REDIS_URL is required"):
        Settings.from_env({"SESSION_STORE": "redis"})
    with pytest.raises(SettingsError, match="REDIS_URL"):
        Settings.from_env({"SESSION_STORE": "redis", "REDIS_URL": "http://127.0.0.1:6379"})


async def test_turn_events_are_mirrored_in_order(pair: Any, llm: ScriptedLLM, redis: RedisServer) -> None:
    a, _ = await pair()
    llm.push(Reply("alpha beta"))
    reply = await (await a.post("/api/v1/chat/stream", json={"session_id": "s", "message": "hi"})).text()
    turns = a.app[TURNS]
    await turns.flush(5)
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis.url, decode_responses=True)
    try:
        keys_found = [k async for k in client.scan_iter(match="msev15:{default}:turnlog:*")]
        assert len(keys_found) == 1
        entries = await client.xrange(keys_found[0])
        assert entries  # the turn's events, each under its seq
        assert [e[0] for e in entries] == [f"{n}-0" for n in range(1, len(entries) + 1)]
        last = entries[-1][1]
        assert last is not None and json.loads(last["e"])["k"] == "TurnCompleted"
        assert 0 < await client.ttl(keys_found[0]) <= 300  # expires after STREAM_RETENTION_SECONDS
    finally:
        await client.aclose()
    assert reply.count("data: ") == len(entries)


async def test_the_per_tenant_rate_limit_is_shared_across_instances(pair: Any, llm: ScriptedLLM) -> None:
    a, b = await pair(rate_limit_per_tenant_per_minute=3)
    statuses: list[int] = []
    for client in (a, b, a, b):
        resp = await client.post("/api/v1/chat", json={"session_id": f"s{len(statuses)}", "message": "hi",
                                                        "tenant_id": "busy"})
        statuses.append(resp.status)
        if resp.status == 429:
            assert_envelope(await resp.json(), "tenant_rate_limited")
            assert int(resp.headers["Retry-After"]) >= 1
    assert statuses == [200, 200, 200, 429]
    other = await b.post("/api/v1/chat", json={"session_id": "x", "message": "hi", "tenant_id": "calm"})
    assert other.status == 200  # another tenant's window is its own


async def test_a_release_wakes_waiters_only_when_a_turn_waits(pair: Any, llm: ScriptedLLM,
                                                              redis: RedisServer) -> None:
    """A turn's release publishes on the wake channel only when its session's queue still holds a
    turn (one waiting on either instance); with nobody queued it publishes nothing, so no
    instance's listener handles a message per turn of the fleet."""
    import redis.asyncio as aioredis

    from msev15.agent.redis_coordination import WAKE_CHANNEL
    from msev15.store.redis_kit import tenant_key

    a, b = await pair()
    listener = aioredis.Redis.from_url(redis.url, decode_responses=True)
    pubsub = listener.pubsub()
    await pubsub.subscribe(WAKE_CHANNEL)
    assert (await pubsub.get_message(timeout=5))["type"] == "subscribe"

    async def wakes_until_marker() -> list[str]:
        await listener.publish(WAKE_CHANNEL, "marker")  # published after every release before it
        seen: list[str] = []
        while (message := await pubsub.get_message(ignore_subscribe_messages=True, timeout=5)) is not None:
            if message["data"] == "marker":
                return seen
            seen.append(message["data"])
        raise AssertionError("the marker never arrived")

    try:
        llm.push(Reply("alone"))
        assert (await a.post("/api/v1/chat", json={"session_id": "quiet", "message": "hi"})).status == 200
        assert await wakes_until_marker() == []
        gate = asyncio.Event()
        llm.push(Reply("first", gate=gate, gate_after=1), Reply("second"))
        first = await a.post("/api/v1/chat/stream", json={"session_id": "busy", "message": "one"})
        await eventually(lambda: llm.streams_started == 1, "the first turn to reach the model")
        second = asyncio.create_task(b.post("/api/v1/chat", json={"session_id": "busy", "message": "two"}))
        queue = tenant_key("default", "queue", "busy")
        await eventually(lambda: len(b.app[TURNS]._turns) >= 1, "the second turn to be queued on b")
        gate.set()
        assert [d for _, d in await frames(first)][-1]["message_count"] == 2
        assert (await (await second).json())["message_count"] == 4
        assert await wakes_until_marker() == [queue]  # the first release woke b's waiter; the second, nobody
    finally:
        await pubsub.aclose()
        await listener.aclose()
