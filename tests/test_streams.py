"""Streams that survive the network: event ids, resume with Last-Event-ID, turn status, cancel,
the busy-session policy, and a valid history after any stop.

The model is the scripted OpenAI-compatible server, which refuses a history holding a tool call
without its result (as the real API does), so "the next turn works" is a real check.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from msev15.store.context import ORDERS
from tests.complaints.server import eventually
from tests.conftest import assert_envelope
from tests.llm_server import Call, Reply, ScriptedLLM
from tests.smtp_server import RecordingSMTP

Frame = tuple[str, dict[str, Any]]  # (id, data)


def _openai(llm: ScriptedLLM, **extra: Any) -> dict[str, Any]:
    return dict(llm_provider="openai", openai_base_url=f"{llm.url}/v1", openai_api_key="sk-test-123456",
                llm_max_retries=0, **extra)


async def frames(resp: ClientResponse, limit: int | None = None) -> list[Frame]:
    """Read SSE frames (id, data) until the stream ends or ``limit`` frames were read."""
    out: list[Frame] = []
    event_id = ""
    while limit is None or len(out) < limit:
        raw = await resp.content.readline()
        if not raw:
            break
        line = raw.decode().rstrip("\r\n")
        if line.startswith("id: "):
            event_id = line[4:]
        elif line.startswith("data: "):
            out.append((event_id, json.loads(line[6:])))
            event_id = ""
    return out


async def _events(client: TestClient, session: str, turn: str, tenant: str = "default",
                  headers: dict[str, str] | None = None, query: str = "") -> ClientResponse:
    return await client.get(f"/api/v1/sessions/{session}/turns/{turn}/events?tenant_id={tenant}{query}",
                            headers=headers)


@pytest.fixture
async def smtp() -> AsyncIterator[RecordingSMTP]:
    async with RecordingSMTP() as server:
        yield server


# --- event ids -------------------------------------------------------------------------------


async def test_every_frame_has_turn_and_seq_and_replies_name_the_turn(service, llm: ScriptedLLM) -> None:
    client = await service(**_openai(llm))
    llm.push(Reply("one two three"))
    resp = await client.post("/api/v1/chat/stream", json={"session_id": "s", "message": "hi"})
    turn_id = resp.headers["X-Turn-ID"]
    got = await frames(resp)
    assert [f[0] for f in got] == [f"{turn_id}:{i}" for i in range(1, len(got) + 1)]
    assert [f[1]["type"] for f in got] == ["token", "token", "token", "done"]
    assert got[-1][1]["turn_id"] == turn_id
    reply = await (await client.post("/api/v1/chat", json={"session_id": "s", "message": "again"})).json()
    assert reply["turn_id"] and reply["turn_id"] != turn_id
    assert {"session_id", "message", "timestamp", "message_count", "tenant_id"} <= set(reply)


# --- resume ------------------------------------------------------------------------------------


async def test_drop_after_every_k_and_resume_gives_the_whole_stream_once(service, llm: ScriptedLLM) -> None:
    """A tool call, then a six-token answer held by the model after three tokens: for every k,
    drop the connection after k events, resume with Last-Event-ID (mid-turn when the model is
    still held), and compare with the uninterrupted stream, event for event."""
    client = await service(**_openai(llm, order_db_seed=True))
    order = await client.app[ORDERS].create("default", "CUST-1", "SKU-A", 1, 5.0, "1 Main St")
    words = "Your order is pending right now"

    def script() -> asyncio.Event:
        gate = asyncio.Event()
        llm.push(Reply(tool_calls=[Call("get_order_by_id", {"order_id": order["order_id"]}, "c1")]),
                 Reply(words, gate=gate, gate_after=4))  # chunk 0 is the empty role chunk
        return gate

    reference_gate = script()
    reference_gate.set()
    resp = await client.post("/api/v1/chat/stream", json={"session_id": "ref", "message": "where is it?"})
    reference = [data for _, data in await frames(resp)]
    kinds = [e["type"] for e in reference]
    assert kinds == ["tool_call", "tool_result"] + ["token"] * 6 + ["done"]
    before_gate = 2 + 3  # tool_call, tool_result and three tokens come before the model is held

    for k in range(1, len(reference)):
        gate = script()
        session = f"s{k}"
        resp = await client.post("/api/v1/chat/stream", json={"session_id": session, "message": "where is it?"})
        turn_id = resp.headers["X-Turn-ID"]
        first = await frames(resp, limit=min(k, before_gate))
        if k > before_gate:
            gate.set()
            first += await frames(resp, limit=k - before_gate)
        resp.close()  # the connection drops
        assert len(first) == k
        resumed_resp = await _events(client, session, turn_id, headers={"Last-Event-ID": first[-1][0]})
        assert resumed_resp.status == 200
        gate.set()
        resumed = await frames(resumed_resp)
        together = first + resumed
        assert [i for i, _ in together] == [f"{turn_id}:{n}" for n in range(1, len(reference) + 1)], k
        normalised = [{**d, "session_id": "ref", **({"turn_id": "-"} if "turn_id" in d else {})} for _, d in together]
        expected = [{**d, **({"turn_id": "-"} if "turn_id" in d else {})} for d in reference]
        assert normalised == expected, k


async def test_resume_after_the_end_replays_the_turn_and_after_skips(service, llm: ScriptedLLM) -> None:
    client = await service(**_openai(llm))
    llm.push(Reply("a b c"))
    resp = await client.post("/api/v1/chat/stream", json={"session_id": "s", "message": "hi"})
    turn_id = resp.headers["X-Turn-ID"]
    original = await frames(resp)
    replay = await _events(client, "s", turn_id)
    assert replay.headers["Content-Type"].startswith("text/event-stream")
    assert await frames(replay) == original
    tail = await frames(await _events(client, "s", turn_id, query="&after=2"))
    assert tail == original[2:]
    # After the terminal event of a finished turn: 204, which also stops an EventSource reconnecting.
    last = original[-1][0]
    done = await _events(client, "s", turn_id, headers={"Last-Event-ID": last})
    assert done.status == 204 and done.headers["X-Turn-ID"] == turn_id and await done.read() == b""
    assert (await _events(client, "s", turn_id, query=f"&after={len(original)}")).status == 204
    # Past it: an id this turn never sent is a 400 in the envelope, naming what was sent.
    for past in ({"headers": {"Last-Event-ID": f"{turn_id}:99"}}, {"query": "&after=99"}):
        bad = await _events(client, "s", turn_id, **past)
        assert bad.status == 400
        body = await bad.json()
        assert_envelope(body, "validation_error")
        assert body["field"] == ("Last-Event-ID" if "headers" in past else "after")


async def test_eventsource_style_reconnect_uses_last_event_id(service, llm: ScriptedLLM) -> None:
    """What a browser EventSource sends when it reconnects: GET, Accept: text/event-stream,
    Last-Event-ID with the id of the last event it saw."""
    client = await service(**_openai(llm))
    gate = asyncio.Event()
    llm.push(Reply("first second third fourth", gate=gate, gate_after=3))
    resp = await client.post("/api/v1/chat/stream", json={"session_id": "s", "message": "hi"})
    turn_id = resp.headers["X-Turn-ID"]
    seen = await frames(resp, limit=2)
    resp.close()
    again = await _events(client, "s", turn_id, headers={"Accept": "text/event-stream", "Cache-Control": "no-cache",
                                                         "Last-Event-ID": seen[-1][0]})
    gate.set()
    rest = await frames(again)
    text = "".join(d["content"] for _, d in seen + rest if d["type"] == "token")
    assert text == "first second third fourth"
    assert [d["type"] for _, d in rest].count("done") == 1


async def test_resume_of_another_tenants_or_sessions_turn_is_404(service, llm: ScriptedLLM) -> None:
    client = await service(**_openai(llm))
    resp = await client.post("/api/v1/chat/stream", json={"session_id": "s", "message": "hi", "tenant_id": "acme"})
    turn_id = resp.headers["X-Turn-ID"]
    await frames(resp)
    assert (await _events(client, "s", turn_id, tenant="acme")).status == 200
    for session, tenant, turn in (("s", "other", turn_id), ("s2", "acme", turn_id), ("s", "acme", "nope")):
        for path in (f"/api/v1/sessions/{session}/turns/{turn}/events", f"/api/v1/sessions/{session}/turns/{turn}"):
            bad = await client.get(f"{path}?tenant_id={tenant}")
            assert bad.status == 404
            assert_envelope(await bad.json(), "turn_not_found")
        cancel = await client.post(f"/api/v1/sessions/{session}/turns/{turn}/cancel?tenant_id={tenant}")
        assert cancel.status == 404


@pytest.mark.parametrize("header", ["garbage", "other-turn:3", "TURN:-1", "TURN:abc", "TURN:1234567890123"])
async def test_malformed_last_event_id_is_400(service, llm: ScriptedLLM, header: str) -> None:
    client = await service(**_openai(llm))
    resp = await client.post("/api/v1/chat", json={"session_id": "s", "message": "hi"})
    turn_id = (await resp.json())["turn_id"]
    bad = await _events(client, "s", turn_id, headers={"Last-Event-ID": header.replace("TURN", turn_id)})
    assert bad.status == 400
    assert_envelope(await bad.json(), "validation_error")


@pytest.mark.parametrize("after", ["-1", "x", "1e3", "12345678901"])
async def test_malformed_after_is_400(service, llm: ScriptedLLM, after: str) -> None:
    client = await service(**_openai(llm))
    turn_id = (await (await client.post("/api/v1/chat", json={"session_id": "s", "message": "hi"})).json())["turn_id"]
    bad = await _events(client, "s", turn_id, query=f"&after={after}")
    assert bad.status == 400
    assert_envelope(await bad.json(), "validation_error")


async def test_retention_ends_and_then_the_turn_is_404(service, llm: ScriptedLLM, tmp_path: Path) -> None:
    client = await service(**_openai(llm, stream_retention_seconds=0))
    turn_id = (await (await client.post("/api/v1/chat", json={"session_id": "s", "message": "hi"})).json())["turn_id"]
    gone = await client.get(f"/api/v1/sessions/s/turns/{turn_id}?tenant_id=default")
    assert gone.status == 404
    assert_envelope(await gone.json(), "turn_not_found")


# --- status ------------------------------------------------------------------------------------


async def test_turn_status_through_its_life(service, llm: ScriptedLLM) -> None:
    client = await service(**_openai(llm))
    gate = asyncio.Event()
    llm.push(Reply("slow answer here", gate=gate, gate_after=2), Reply("second"))
    first = await client.post("/api/v1/chat/stream", json={"session_id": "s", "message": "one"})
    turn1 = first.headers["X-Turn-ID"]
    await frames(first, limit=1)
    second = await client.post("/api/v1/chat/stream", json={"session_id": "s", "message": "two"})
    turn2 = second.headers["X-Turn-ID"]
    status = await (await client.get(f"/api/v1/sessions/s/turns/{turn1}")).json()
    assert status == {"turn_id": turn1, "session_id": "s", "tenant_id": "default", "status": "running", "last_seq": 1,
                      "profile_version": 0}  # known from the turn's start: no profile, the defaults
    queued = await (await client.get(f"/api/v1/sessions/s/turns/{turn2}")).json()
    assert queued["status"] == "queued" and queued["last_seq"] == 0 and "profile_version" not in queued
    gate.set()
    await frames(first)
    await frames(second)
    done = await (await client.get(f"/api/v1/sessions/s/turns/{turn1}")).json()
    assert done["status"] == "completed" and done["message_count"] == 2 and done["last_seq"] == 4
    assert done["profile_version"] == 0
    assert (await (await client.get(f"/api/v1/sessions/s/turns/{turn2}")).json())["message_count"] == 4


# --- cancel ------------------------------------------------------------------------------------


async def _history(client: TestClient, session: str) -> list[tuple[str, str]]:
    resp = await client.get(f"/api/v1/sessions/{session}/history")
    if resp.status == 404:
        return []
    return [(m["role"], m["content"]) for m in (await resp.json())["messages"]]


async def test_cancel_while_the_model_streams_stops_it_and_commits_nothing(service, llm: ScriptedLLM) -> None:
    client = await service(**_openai(llm))
    await client.post("/api/v1/chat", json={"session_id": "s", "message": "before"})
    before = await _history(client, "s")
    gate = asyncio.Event()
    llm.push(Reply("never finished answer", gate=gate, gate_after=2))
    resp = await client.post("/api/v1/chat/stream", json={"session_id": "s", "message": "stop me"})
    turn_id = resp.headers["X-Turn-ID"]
    await frames(resp, limit=1)
    cancel = await client.post(f"/api/v1/sessions/s/turns/{turn_id}/cancel")
    assert cancel.status == 202
    assert await cancel.json() == {"turn_id": turn_id, "status": "cancelling"}
    rest = await frames(resp)  # ends without the model being let go: the stream was stopped
    assert [d["type"] for _, d in rest] == ["error"] and rest[0][1]["error"] == "cancelled"
    assert rest[0][1]["turn_id"] == turn_id
    assert llm.streams_finished == llm.streams_started - 1
    assert await _history(client, "s") == before
    status = await (await client.get(f"/api/v1/sessions/s/turns/{turn_id}")).json()
    assert status["status"] == "cancelled" and status["error"] == "cancelled"
    # Cancelling a finished turn is a conflict.
    again = await client.post(f"/api/v1/sessions/s/turns/{turn_id}/cancel")
    assert again.status == 409
    assert_envelope(await again.json(), "turn_finished")
    after = await client.post("/api/v1/chat", json={"session_id": "s", "message": "after"})
    assert after.status == 200 and not llm.rejected


async def test_cancel_while_a_tool_runs_keeps_the_completed_call(service, llm: ScriptedLLM, smtp: RecordingSMTP,
                                                                 tmp_path: Path) -> None:
    client = await service(**_openai(llm, smtp_server=smtp.host, smtp_port=smtp.port,
                                     sender_email="support@shop.test", smtp_timeout_seconds=5.0))
    smtp.hold = asyncio.Event()
    llm.push(Reply("Sending it now.", tool_calls=[Call("send_email", {"to": "ada@example.com", "subject": "Hi",
                                                                      "body": "Hello Ada"}, "mail1")]),
             Reply("The model must never be asked this."))
    resp = await client.post("/api/v1/chat/stream", json={"session_id": "s", "message": "email Ada"})
    turn_id = resp.headers["X-Turn-ID"]
    await asyncio.wait_for(smtp.data_started.wait(), 10)
    cancel = await client.post(f"/api/v1/sessions/s/turns/{turn_id}/cancel")
    assert cancel.status == 202
    smtp.hold.set()  # the running tool may finish ...
    got = [d for _, d in await frames(resp)]
    assert [d["type"] for d in got][-3:] == ["tool_call", "tool_result", "error"]
    assert got[-1]["error"] == "cancelled"
    assert len(smtp.messages) == 1
    assert len(llm.requests) == 1  # ... but its result never reaches the model
    history = await _history(client, "s")
    assert history[0] == ("user", "email Ada") and history[1][0] == "assistant" and "cancelled" in history[1][1]
    # The next turn's request holds the call with its result: the scripted API accepts it.
    llm.script.clear()
    llm.push(Reply("Done before."))
    assert (await client.post("/api/v1/chat", json={"session_id": "s", "message": "did it go?"})).status == 200
    assert not llm.rejected
    sent = llm.requests[-1]["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "tool", "assistant", "user"]
    assert sent[2]["tool_calls"][0]["id"] == "mail1" and sent[3]["tool_call_id"] == "mail1"


async def test_cancel_a_queued_turn_and_cancel_twice(service, llm: ScriptedLLM) -> None:
    client = await service(**_openai(llm))
    gate = asyncio.Event()
    llm.push(Reply("first answer", gate=gate, gate_after=1), Reply("third answer"))
    first = await client.post("/api/v1/chat/stream", json={"session_id": "s", "message": "one"})
    await eventually(lambda: llm.streams_started == 1, "the first turn to reach the model")
    second = await client.post("/api/v1/chat/stream", json={"session_id": "s", "message": "two"})
    turn2 = second.headers["X-Turn-ID"]
    assert (await client.post(f"/api/v1/sessions/s/turns/{turn2}/cancel")).status == 202
    twice = await client.post(f"/api/v1/sessions/s/turns/{turn2}/cancel")
    assert twice.status == 409
    assert (await twice.json())["error"] == "turn_finished"
    assert [d for _, d in await frames(second)] == [
        {"type": "error", "error": "cancelled", "message": "The turn was cancelled before it finished.",
         "request_id": second.headers["X-Request-ID"], "session_id": "s", "turn_id": turn2}]
    third = await client.post("/api/v1/chat/stream", json={"session_id": "s", "message": "three"})
    gate.set()
    assert [d["type"] for _, d in await frames(first)][-1] == "done"
    assert [d["type"] for _, d in await frames(third)][-1] == "done"
    assert [m for m in await _history(client, "s") if m[0] == "user"] == [("user", "one"), ("user", "three")]
    assert len(llm.requests) == 2  # the cancelled turn never reached the model


async def test_plain_chat_waiting_on_a_cancelled_turn_gets_409(service, llm: ScriptedLLM) -> None:
    client = await service(**_openai(llm))
    gate = asyncio.Event()
    llm.push(Reply("held", gate=gate, gate_after=1))
    waiting = asyncio.create_task(client.post("/api/v1/chat", json={"session_id": "s", "message": "one"}))
    await eventually(lambda: llm.streams_started == 1, "the turn to reach the model")
    cancel = await client.post("/api/v1/sessions/s/cancel")
    assert cancel.status == 202 and await cancel.json() == {"session_id": "s", "cancelled": 1}
    resp = await waiting
    assert resp.status == 409
    assert_envelope(await resp.json(), "cancelled")
    idle = await client.post("/api/v1/sessions/s/cancel")
    assert await idle.json() == {"session_id": "s", "cancelled": 0}


async def test_model_failure_after_a_tool_keeps_the_tool_exchange(service, llm: ScriptedLLM) -> None:
    client = await service(**_openai(llm))
    order = await client.app[ORDERS].create("default", "CUST-1", "SKU-A", 1, 5.0, "1 Main St")
    llm.push(Reply(tool_calls=[Call("get_order_by_id", {"order_id": order["order_id"]}, "c1")]), Reply(status=500))
    failed = await client.post("/api/v1/chat", json={"session_id": "s", "message": "where is it?"})
    assert failed.status == 502
    history = await _history(client, "s")
    assert history[0] == ("user", "where is it?") and "failed" in history[1][1]
    llm.push(Reply("It is pending."))
    assert (await client.post("/api/v1/chat", json={"session_id": "s", "message": "and now?"})).status == 200
    assert not llm.rejected
    assert [m["role"] for m in llm.requests[-1]["messages"]] == ["system", "user", "assistant", "tool", "assistant",
                                                                 "user"]


# --- busy policy --------------------------------------------------------------------------------


async def test_if_busy_reject_answers_409_with_retry_after(service, llm: ScriptedLLM) -> None:
    client = await service(**_openai(llm))
    gate = asyncio.Event()
    llm.push(Reply("held", gate=gate, gate_after=1))
    first = await client.post("/api/v1/chat/stream", json={"session_id": "s", "message": "one"})
    for path in ("/api/v1/chat", "/api/v1/chat/stream"):
        busy = await client.post(path, json={"session_id": "s", "message": "two", "if_busy": "reject"})
        assert busy.status == 409 and int(busy.headers["Retry-After"]) >= 1
        assert_envelope(await busy.json(), "session_busy")
    other = await client.post("/api/v1/chat", json={"session_id": "other", "message": "hi", "if_busy": "reject"})
    assert other.status == 200
    gate.set()
    await frames(first)
    resp = await client.post("/api/v1/chat", json={"session_id": "s", "message": "x", "if_busy": "reject"})
    assert resp.status == 200


async def test_racing_rejects_let_exactly_one_in(service, llm: ScriptedLLM) -> None:
    client = await service(**_openai(llm))
    gate = asyncio.Event()
    llm.push(Reply("held", gate=gate, gate_after=1))
    posts = [client.post("/api/v1/chat", json={"session_id": "s", "message": f"m{i}", "if_busy": "reject"})
             for i in range(6)]
    tasks = [asyncio.create_task(p) for p in posts]
    await eventually(lambda: sum(t.done() for t in tasks) == 5, "five refusals")
    gate.set()
    statuses = sorted(resp.status for resp in await asyncio.gather(*tasks))
    assert statuses == [200, 409, 409, 409, 409, 409]


async def test_if_busy_interrupt_stops_running_and_queued_then_runs(service, llm: ScriptedLLM) -> None:
    client = await service(**_openai(llm))
    gate = asyncio.Event()
    llm.push(Reply("old answer", gate=gate, gate_after=1), Reply("new answer"))
    first = await client.post("/api/v1/chat/stream", json={"session_id": "s", "message": "one"})
    await eventually(lambda: llm.streams_started == 1, "the first turn to reach the model")
    queued = await client.post("/api/v1/chat/stream", json={"session_id": "s", "message": "two"})
    new = await client.post("/api/v1/chat", json={"session_id": "s", "message": "three", "if_busy": "interrupt"})
    assert new.status == 200 and (await new.json())["message"] == "new answer"
    for resp in (first, queued):
        ends = [d for _, d in await frames(resp) if d["type"] in ("done", "error")]
        assert [(d["type"], d["error"]) for d in ends] == [("error", "interrupted")]
    assert await _history(client, "s") == [("user", "three"), ("assistant", "new answer")]
    assert not llm.rejected


@pytest.mark.parametrize("value", ["wait", "", None, 1, ["reject"]])
async def test_unknown_if_busy_is_400(service, value: Any) -> None:
    client = await service()
    for path in ("/api/v1/chat", "/api/v1/chat/stream"):
        resp = await client.post(path, json={"session_id": "s", "message": "hi", "if_busy": value})
        assert resp.status == 400
        body = await resp.json()
        assert_envelope(body, "validation_error")
        assert body["field"] == "if_busy"


async def test_a_dropped_stream_does_not_stop_its_turn(service, llm: ScriptedLLM) -> None:
    client = await service(**_openai(llm))
    gate = asyncio.Event()
    llm.push(Reply("kept after the drop", gate=gate, gate_after=1))
    resp = await client.post("/api/v1/chat/stream", json={"session_id": "s", "message": "hi"})
    turn_id = resp.headers["X-Turn-ID"]
    resp.close()
    gate.set()
    again = await _events(client, "s", turn_id)
    assert [d["type"] for _, d in await frames(again)][-1] == "done"
    assert await _history(client, "s") == [("user", "hi"), ("assistant", "kept after the drop")]
