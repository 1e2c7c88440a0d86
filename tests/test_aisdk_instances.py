"""The AI SDK resume route (``useChat({resume: true})``) on two instances sharing one Redis.

A resume may reach any instance: it must stream the session's running turn wherever it runs (the
head of the session's queue in Redis), as the REST resume route does, and tell another tenant
nothing (the same 204 as a session with no open turn).
"""

from __future__ import annotations

import asyncio
from typing import Any

from tests.complaints.server import eventually
from tests.conftest import assert_envelope
from tests.instances import Pair
from tests.llm_server import Reply, ScriptedLLM
from tests.test_aisdk import URL, chat_body, parts


def _text(got: list[Any]) -> str:
    return "".join(p["delta"] for p in got if p["type"] == "text-delta")


async def test_resume_on_b_streams_the_turn_running_on_a(pair: Pair, llm: ScriptedLLM) -> None:
    a, b = await pair()
    gate = asyncio.Event()
    llm.push(Reply("one two three four", gate=gate, gate_after=2))
    assert (await b.get(f"{URL}/chat-1/stream")).status == 204  # nothing open yet
    first = await a.post(URL, json=chat_body("Hi"))
    turn_id = first.headers["X-Turn-ID"]
    await eventually(lambda: llm.streams_started == 1, "the model stream started")

    resumed = await b.get(f"{URL}/chat-1/stream")
    assert resumed.status == 200 and resumed.headers["X-Turn-ID"] == turn_id
    gate.set()
    mine, theirs = parts(await first.text()), parts(await resumed.text())
    assert mine == theirs and _text(mine) == "one two three four" and mine[-1]["type"] == "finish"
    assert (await b.get(f"{URL}/chat-1/stream")).status == 204  # it ended: nothing to resume
    assert (await a.get(f"{URL}/chat-1/stream")).status == 204


async def test_resume_on_another_tenant_or_unknown_session_tells_nothing(pair: Pair, llm: ScriptedLLM) -> None:
    """The bad inputs next to the good one: another tenant asking for a session that is running
    on A gets what an unknown session gets (204), as the REST route answers the same 404 for an
    unknown turn and another tenant's."""
    a, b = await pair()
    gate = asyncio.Event()
    llm.push(Reply("one two", gate=gate, gate_after=1))
    first = await a.post(URL, json=chat_body("Hi"), headers={"X-Tenant-ID": "acme"})
    turn_id = first.headers["X-Turn-ID"]
    await eventually(lambda: llm.streams_started == 1, "the model stream started")
    try:
        for client in (a, b):
            assert (await client.get(f"{URL}/chat-1/stream", headers={"X-Tenant-ID": "acme"})).status == 200
            other = await client.get(f"{URL}/chat-1/stream", headers={"X-Tenant-ID": "intruder"})
            unknown = await client.get(f"{URL}/no-such-chat/stream", headers={"X-Tenant-ID": "acme"})
            assert other.status == unknown.status == 204
            assert await other.read() == await unknown.read() == b""
            rest_other = await client.get(f"/api/v1/sessions/chat-1/turns/{turn_id}/events?tenant_id=intruder")
            rest_unknown = await client.get("/api/v1/sessions/chat-1/turns/no-such-turn/events?tenant_id=acme")
            assert rest_other.status == rest_unknown.status == 404
            assert_envelope(await rest_other.json(), "turn_not_found")
            assert_envelope(await rest_unknown.json(), "turn_not_found")
    finally:
        gate.set()
    assert parts(await first.text())[-1]["type"] == "finish"


async def test_resume_where_a_turn_waits_streams_the_one_running_elsewhere(pair: Pair, llm: ScriptedLLM) -> None:
    """B holds the session's second turn, waiting for the first, which runs on A: a resume on B
    streams the running one (the head of the session's queue), not B's own waiting turn."""
    a, b = await pair()
    gate = asyncio.Event()
    llm.push(Reply("first answer", gate=gate, gate_after=1), Reply("second answer"))
    first = await a.post(URL, json=chat_body("one"))
    await eventually(lambda: llm.streams_started == 1, "the first turn to reach the model")
    second = await b.post(URL, json=chat_body("two"))
    assert second.headers["X-Turn-ID"] != first.headers["X-Turn-ID"]

    resumed = await b.get(f"{URL}/chat-1/stream")
    assert resumed.status == 200 and resumed.headers["X-Turn-ID"] == first.headers["X-Turn-ID"]
    gate.set()
    assert _text(parts(await resumed.text())) == "first answer"
    assert _text(parts(await first.text())) == "first answer"
    assert _text(parts(await second.text())) == "second answer"
