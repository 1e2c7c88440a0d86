"""The session stream (``GET /api/v1/sessions/{id}/events``): a customer hears the agent's turns,
the handoff, the operator's messages and every change of mode, with the session's own ids;
resumes with Last-Event-ID exactly once and in order; ends when the session is deleted; and
works across two instances on one Redis."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from msev15.agent.context import RUNNER
from tests.conftest import assert_envelope
from tests.instances import two_apps
from tests.llm_server import Reply, ScriptedLLM

DEADLINE = 20.0  # seconds for an expected event: a bound on a hang, not a timing assertion


class Follower:
    """An open session stream, read event by event."""

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self.resp = resp
        self.seen: list[tuple[int, dict[str, Any]]] = []

    async def next(self) -> tuple[int, dict[str, Any]]:
        event_id: int | None = None
        async with asyncio.timeout(DEADLINE):
            while True:
                line = (await self.resp.content.readline()).decode()
                if not line:
                    raise EOFError("the stream ended")
                line = line.rstrip("\n")
                if line.startswith("id: "):
                    event_id = int(line[4:])
                elif line.startswith("data: "):
                    assert event_id is not None, line
                    entry = (event_id, json.loads(line[6:]))
                    self.seen.append(entry)
                    return entry

    async def until(self, kind: str, **fields: Any) -> dict[str, Any]:
        while True:
            _, event = await self.next()
            if event["type"] == kind and all(event.get(k) == v for k, v in fields.items()):
                return event


async def _follow(client: TestClient, session: str, tenant: str | None = None, **headers: str) -> Follower:
    params = {"tenant_id": tenant} if tenant else {}
    resp = await client.get(f"/api/v1/sessions/{session}/events", headers=headers, params=params)
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    assert (await resp.content.readline()) == b": open\n"  # the stream is open: what follows is "from now on"
    return Follower(resp)


async def test_the_customer_hears_turns_the_handoff_and_the_operator(service) -> None:
    client = await service()
    stream = await _follow(client, "s1")
    resp = await client.post("/api/v1/chat", json={"session_id": "s1", "message": "hello"})
    turn_id = (await resp.json())["turn_id"]
    done = await stream.until("done")
    assert done["turn_id"] == turn_id and all(e.get("turn_id") == turn_id for _, e in stream.seen)

    await client.post("/api/v1/chat", json={"session_id": "s1", "message": "I want to talk to a person"})
    handoff = await stream.until("handoff")
    assert handoff["mode"] == "waiting_for_human" and handoff["turn_id"]
    assert (await stream.next())[1] == {"type": "mode", "mode": "waiting_for_human", "by": {"type": "agent"}}
    assert (await stream.next())[1]["status"] == "with_human"  # the turn's done

    await client.post("/api/v1/chat", json={"session_id": "s1", "message": "Anyone?"})
    customer = await stream.until("customer_message")
    assert customer["content"] == "Anyone?" and customer["message_id"]
    await client.post("/api/v1/handoffs/s1/claim")
    operator = {"type": "human", "id": "anonymous", "name": "Operator"}
    assert await stream.until("mode") == {"type": "mode", "mode": "human", "by": operator}
    resp = await client.post("/api/v1/handoffs/s1/messages", json={"content": "Hi, how can I help?"})
    message_id = (await resp.json())["message_id"]
    assert await stream.until("human_message") == {
        "type": "human_message", "message_id": message_id, "content": "Hi, how can I help?",
        "author": {"id": "anonymous", "name": "Operator"}}
    await client.post("/api/v1/handoffs/s1/release", json={"note": "Back to the assistant."})
    assert (await stream.until("human_message"))["content"] == "Back to the assistant."
    assert await stream.until("mode") == {"type": "mode", "mode": "agent", "by": operator}
    ids = [i for i, _ in stream.seen]
    assert ids == list(range(1, len(ids) + 1))  # the session's own ids, from its first event

    # Resume after any id: exactly the rest, once, in order.
    resumed = await _follow(client, "s1", **{"Last-Event-ID": str(ids[4])})
    for expected in stream.seen[5:]:
        assert await resumed.next() == expected


async def test_a_new_stream_starts_from_now(service) -> None:
    client = await service()
    before = await (await client.post("/api/v1/chat", json={"session_id": "s1", "message": "hello"})).json()
    stream = await _follow(client, "s1")
    after = await (await client.post("/api/v1/chat", json={"session_id": "s1", "message": "hello again"})).json()
    first_id, first = await stream.next()
    assert first_id >= 1 and first["type"] in ("token", "tool_call", "done")
    assert first["turn_id"] == after["turn_id"] != before["turn_id"]  # nothing of the turn before


async def test_deleting_the_session_ends_its_stream(service) -> None:
    client = await service()
    await client.post("/api/v1/chat", json={"session_id": "s1", "message": "hello"})
    stream = await _follow(client, "s1")
    assert (await client.delete("/api/v1/sessions/s1")).status == 200
    assert (await stream.next())[1] == {"type": "session_deleted"}
    async with asyncio.timeout(DEADLINE):
        assert (await stream.resp.content.read()).strip() == b""  # nothing more: the server ended it


async def test_at_shutdown_the_stream_ends_once_the_turns_in_flight_have(service, llm: ScriptedLLM) -> None:
    """The stream carries a draining turn to its end, then ends: it does not wait out a ping
    interval (an hour here: the follower's deadline would fail first)."""
    client = await service(sse_ping_seconds=3600, llm_provider="openai", openai_base_url=f"{llm.url}/v1",
                           llm_max_retries=0)
    follower = await _follow(client, "s1")
    gate = asyncio.Event()
    llm.push(Reply("Almost there, one moment", gate=gate, gate_after=3))
    chat = asyncio.create_task(client.post("/api/v1/chat/stream", json={"session_id": "s1", "message": "Hi"}))
    await follower.until("token")
    client.app[RUNNER].begin_shutdown(60)
    gate.set()
    done = await follower.until("done")
    with pytest.raises(EOFError):
        await follower.next()
    answered = await chat
    assert answered.status == 200 and '"type": "done"' in await answered.text() and done["message_count"] == 2


async def test_at_shutdown_an_idle_stream_ends_at_once(service) -> None:
    client = await service(sse_ping_seconds=3600)
    follower = await _follow(client, "s1")
    client.app[RUNNER].begin_shutdown(60)
    with pytest.raises(EOFError):
        await follower.next()


async def test_a_bad_last_event_id_is_refused(service) -> None:
    client = await service()
    for bad in ("abc", "-1", "1:2", "9" * 20):
        resp = await client.get("/api/v1/sessions/s1/events", headers={"Last-Event-ID": bad})
        assert resp.status == 400, bad
        body = await resp.json()
        assert_envelope(body, "validation_error")
        assert body["field"] == "Last-Event-ID"
    resp = await client.get("/api/v1/sessions/bad%20id/events")
    assert resp.status == 400


async def test_other_tenants_hear_nothing(service) -> None:
    client = await service()
    acme = await _follow(client, "s1", "acme")
    globex = await _follow(client, "s1", "globex")
    resp = await client.post("/api/v1/chat", json={"session_id": "s1", "message": "hello", "tenant_id": "globex"})
    globex_turn = (await resp.json())["turn_id"]
    resp = await client.post("/api/v1/chat", json={"session_id": "s1", "message": "hello", "tenant_id": "acme"})
    acme_turn = (await resp.json())["turn_id"]
    assert (await globex.until("done"))["turn_id"] == globex_turn
    assert (await acme.until("done"))["turn_id"] == acme_turn
    assert {e["turn_id"] for _, e in acme.seen} == {acme_turn}  # nothing of globex's turn, same session id


async def test_the_stream_works_across_instances_on_redis(aiohttp_client: Any, tmp_path: Path,
                                                          redis_url: str) -> None:
    a, b = await two_apps(aiohttp_client, tmp_path, redis_url)
    stream = await _follow(a, "s1")  # the customer on instance a
    resp = await b.post("/api/v1/chat", json={"session_id": "s1", "message": "I want to talk to a person"})
    assert (await resp.json())["status"] == "with_human"
    assert (await stream.until("handoff"))["mode"] == "waiting_for_human"
    assert (await b.post("/api/v1/handoffs/s1/claim")).status == 200  # the operator on instance b
    await stream.until("mode", mode="human")
    await b.post("/api/v1/handoffs/s1/messages", json={"content": "Hello from b"})
    assert (await stream.until("human_message"))["content"] == "Hello from b"
    ids = [i for i, _ in stream.seen]
    assert ids == sorted(set(ids))
    resumed = await _follow(b, "s1", **{"Last-Event-ID": str(ids[0])})  # and resumes on the other instance
    for expected in stream.seen[1:]:
        assert await resumed.next() == expected
