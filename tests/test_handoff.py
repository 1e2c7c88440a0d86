"""Handing a conversation to a person: the ``handoff_to_human`` tool, the session's mode, and a
customer's messages while a person holds the session (stored for the operator, never sent to
the model). The real app with the offline assistant, or the scripted OpenAI-compatible server
(which refuses a history the OpenAI API would refuse), every session store.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
from aiohttp.test_utils import TestClient

from msev15.agent.loop import HANDOFF_NOTE
from msev15.store.base import SESSIONS
from tests.conftest import assert_envelope, sse_events
from tests.llm_server import Call, Reply, ScriptedLLM

HANDOFF = Call("handoff_to_human", {"reason": "Customer asked for a person",
                                    "summary": "Wants a refund for ORD-1; order lookup failed twice."})


async def _stream(client: TestClient, session: str, message: str, **extra: Any) -> list[dict[str, Any]]:
    resp = await client.post("/api/v1/chat/stream", json={"session_id": session, "message": message, **extra})
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    return sse_events(await resp.text())


async def _history(client: TestClient, session: str) -> dict[str, Any]:
    resp = await client.get(f"/api/v1/sessions/{session}/history")
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


@pytest.fixture(params=["memory", "sqlite", "redis"])
def store_kind(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    if request.param == "redis":
        return {"session_store": "redis", "redis_url": request.getfixturevalue("redis_url")}
    return {"session_store": request.param, "session_db_path": str(tmp_path / "sessions.db")}


async def test_the_model_hands_off_and_the_customer_waits_for_a_person(service, llm: ScriptedLLM,
                                                                       store_kind: dict[str, Any]) -> None:
    client = await service(llm_provider="openai", openai_base_url=f"{llm.url}/v1", llm_max_retries=0, **store_kind)
    llm.push(Reply(tool_calls=[HANDOFF]))
    events = await _stream(client, "s1", "I want a refund and I want to talk to a person")
    assert [e["type"] for e in events] == ["tool_call", "tool_result", "token", "handoff", "done"]
    assert events[0]["name"] == "handoff_to_human" and events[1]["ok"] is True
    assert events[2]["content"] == HANDOFF_NOTE
    assert events[3] == {"type": "handoff", "mode": "waiting_for_human", "reason": "Customer asked for a person",
                         "summary": "Wants a refund for ORD-1; order lookup failed twice.", "session_id": "s1"}
    assert events[4]["status"] == "with_human" and events[4]["message_count"] == 2
    assert len(llm.requests) == 1  # the model's turn ended with the call: no second round
    assert any(t["function"]["name"] == "handoff_to_human" for t in llm.requests[0]["tools"])

    history = await _history(client, "s1")
    assert history["mode"] == "waiting_for_human"
    assert [m["content"] for m in history["messages"]] == [
        "I want a refund and I want to talk to a person", HANDOFF_NOTE]
    listed = await (await client.get("/api/v1/sessions")).json()
    assert [(s["session_id"], s["mode"]) for s in listed["sessions"]] == [("s1", "waiting_for_human")]

    # While a person has it: stored for them, never sent to the model.
    resp = await client.post("/api/v1/chat", json={"session_id": "s1", "message": "Hello? Anyone?"})
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert (body["status"], body["message"], body["mode"], body["message_count"]) == (
        "with_human", None, "waiting_for_human", 3)
    events = await _stream(client, "s1", "Still waiting")
    turn_id = events[-1]["turn_id"]
    assert events == [{"type": "handoff", "mode": "waiting_for_human", "session_id": "s1"},
                      {"type": "done", "session_id": "s1", "message_count": 4, "turn_id": turn_id,
                       "profile_version": 0, "status": "with_human"}]
    assert len(llm.requests) == 1
    history = await _history(client, "s1")
    assert [(m["role"], m["content"]) for m in history["messages"][2:]] == [
        ("user", "Hello? Anyone?"), ("user", "Still waiting")]

    # Another session of the tenant is the agent's as before.
    resp = await client.post("/api/v1/chat", json={"session_id": "s2", "message": "Hi"})
    body = await resp.json()
    assert resp.status == 200 and body["message"] == "Hello from the scripted model." and "status" not in body
    assert len(llm.requests) == 2


async def test_a_customer_message_while_with_a_person_is_validated_like_any(service, llm: ScriptedLLM) -> None:
    client = await service(llm_provider="openai", openai_base_url=f"{llm.url}/v1", llm_max_retries=0,
                           max_message_chars=50)
    llm.push(Reply(tool_calls=[HANDOFF]))
    await _stream(client, "s1", "A person please")
    resp = await client.post("/api/v1/chat", json={"session_id": "s1", "message": "x" * 51})
    assert resp.status == 400
    assert_envelope(await resp.json(), "validation_error")
    resp = await client.post("/api/v1/chat/stream", json={"session_id": "s1", "message": ""})
    assert resp.status == 400
    assert_envelope(await resp.json(), "validation_error")
    assert (await _history(client, "s1"))["message_count"] == 2  # nothing stored


async def test_a_handoff_with_bad_arguments_is_a_tool_error_and_no_handoff(service, llm: ScriptedLLM) -> None:
    client = await service(llm_provider="openai", openai_base_url=f"{llm.url}/v1", llm_max_retries=0)
    llm.push(Reply(tool_calls=[Call("handoff_to_human", {"summary": "no reason given"})]),
             Reply("Let me help you myself."))
    events = await _stream(client, "s1", "A person please")
    assert [e["type"] for e in events if e["type"] != "token"] == ["tool_call", "tool_result", "done"]
    assert events[1]["ok"] is False and "status" not in events[-1]
    assert (await _history(client, "s1"))["mode"] == "agent"
    assert "reason" in llm.requests[1]["messages"][-1]["content"]  # the model read why it failed


async def test_the_offline_assistant_hands_off_when_asked_for_a_person(service) -> None:
    client = await service()
    events = await _stream(client, "s1", "I want to talk to a person")
    kinds = [e["type"] for e in events]
    assert kinds[-2:] == ["handoff", "done"], events
    handoff = events[-2]
    assert handoff["mode"] == "waiting_for_human" and handoff["reason"] and handoff["summary"]
    assert events[-1]["status"] == "with_human"
    assert (await _history(client, "s1"))["mode"] == "waiting_for_human"


async def test_a_held_stream_is_numbered_and_named_like_any_turn(service) -> None:
    """The held message's frames carry ids and the X-Turn-ID header: EventSource keeps its
    lastEventId, and the turn's status and resume routes answer for it like any turn's."""
    client = await service()
    await _stream(client, "s1", "I want to talk to a person")
    resp = await client.post("/api/v1/chat/stream", json={"session_id": "s1", "message": "Hello?"})
    assert resp.status == 200
    turn_id = resp.headers["X-Turn-ID"]
    text = await resp.text()
    assert [line for line in text.splitlines() if line.startswith("id: ")] == [f"id: {turn_id}:1", f"id: {turn_id}:2"]
    handoff, done = sse_events(text)
    assert handoff == {"type": "handoff", "mode": "waiting_for_human", "session_id": "s1"}
    assert done["type"] == "done" and done["status"] == "with_human" and done["turn_id"] == turn_id
    status = await (await client.get(f"/api/v1/sessions/s1/turns/{turn_id}")).json()
    assert status["status"] == "completed" and status["turn_id"] == turn_id
    # Replayed, the same frames under the same ids; resumed after the first, the rest once.
    replayed = await client.get(f"/api/v1/sessions/s1/turns/{turn_id}/events")
    assert await replayed.text() == text
    resumed = await client.get(f"/api/v1/sessions/s1/turns/{turn_id}/events", headers={"Last-Event-ID": f"{turn_id}:1"})
    assert sse_events(await resumed.text()) == [done]


async def test_a_held_message_reports_the_tenants_profile_version(service) -> None:
    """profile_version in the /chat reply, the stream's done and the turn status, as for a run turn."""
    client = await service()
    put = await client.put("/api/v1/agent-profile?tenant_id=acme", json={"greeting": "Hello from Acme"})
    assert put.status == 200 and (await put.json())["version"] == 1
    body = {"session_id": "s1", "tenant_id": "acme"}
    await client.post("/api/v1/chat", json={**body, "message": "I want to talk to a person"})
    held = await (await client.post("/api/v1/chat", json={**body, "message": "Hello?"})).json()
    assert held["status"] == "with_human" and held["profile_version"] == 1 and held["turn_id"]
    status = await (await client.get(f"/api/v1/sessions/s1/turns/{held['turn_id']}?tenant_id=acme")).json()
    assert status["profile_version"] == 1
    resp = await client.post("/api/v1/chat/stream", json={**body, "message": "Still there?"})
    assert sse_events(await resp.text())[-1]["profile_version"] == 1


async def test_with_handoff_disabled_the_tool_is_not_offered(service, llm: ScriptedLLM) -> None:
    client = await service(llm_provider="openai", openai_base_url=f"{llm.url}/v1", llm_max_retries=0,
                           handoff_enabled=False)
    resp = await client.post("/api/v1/chat", json={"session_id": "s1", "message": "A person please"})
    assert resp.status == 200
    assert all(t["function"]["name"] != "handoff_to_human" for t in llm.requests[0].get("tools", []))
    offline = await service(handoff_enabled=False)
    events = await _stream(offline, "s1", "I want to talk to a person")
    assert "handoff" not in [e["type"] for e in events] and "status" not in events[-1]


async def test_with_handoff_disabled_a_stored_mode_holds_nothing_back(service, llm: ScriptedLLM) -> None:
    """HANDOFF_ENABLED=false turns the feature off entirely: a mode left in the store from before
    does not hold messages back from the model."""
    client = await service(llm_provider="openai", openai_base_url=f"{llm.url}/v1", llm_max_retries=0,
                           handoff_enabled=False)
    await client.post("/api/v1/chat", json={"session_id": "s1", "message": "Hi"})
    assert await client.app[SESSIONS].set_mode("default", "s1", "human")
    resp = await client.post("/api/v1/chat", json={"session_id": "s1", "message": "Hi again"})
    assert (await resp.json())["message"] == "Hello from the scripted model."


async def test_the_openapi_document_describes_the_handoff_shapes(service, llm: ScriptedLLM) -> None:
    client = await service(llm_provider="openai", openai_base_url=f"{llm.url}/v1", llm_max_retries=0)
    spec = await (await client.get("/openapi.json")).json()

    def check(name: str, value: Any) -> None:
        jsonschema.Draft4Validator({"$ref": f"#/components/schemas/{name}",
                                    "components": spec["components"]}).validate(value)

    llm.push(Reply(tool_calls=[HANDOFF]))
    for event in await _stream(client, "s1", "A person please"):
        check("StreamEvent", event)
    for event in await _stream(client, "s1", "Hello?"):  # held for the person: no turn ran
        check("StreamEvent", event)
    check("History", await _history(client, "s1"))
    check("SessionList", await (await client.get("/api/v1/sessions")).json())
    chat_response = spec["components"]["schemas"]["ChatResponse"]["properties"]
    assert chat_response["message"]["nullable"] is True and "with_human" in chat_response["status"]["enum"]
