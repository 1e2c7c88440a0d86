"""AG-UI at POST /api/v1/ag-ui: events validated with the protocol's own Python types and encoder."""

from __future__ import annotations

import json
from typing import Any

import pytest
from ag_ui.core import (
    CustomEvent,
    EventType,
    RunErrorEvent,
    RunFinishedEvent,
    RunStartedEvent,
    TextMessageContentEvent,
    TextMessageEndEvent,
    TextMessageStartEvent,
    ToolCallArgsEvent,
    ToolCallEndEvent,
    ToolCallResultEvent,
    ToolCallStartEvent,
)
from ag_ui.encoder import EventEncoder

from tests.conftest import assert_envelope, sse_events
from tests.llm_server import Call, Reply, ScriptedLLM

URL = "/api/v1/ag-ui"
MODELS: dict[str, Any] = {
    EventType.RUN_STARTED: RunStartedEvent, EventType.RUN_FINISHED: RunFinishedEvent,
    EventType.RUN_ERROR: RunErrorEvent, EventType.TEXT_MESSAGE_START: TextMessageStartEvent,
    EventType.TEXT_MESSAGE_CONTENT: TextMessageContentEvent, EventType.TEXT_MESSAGE_END: TextMessageEndEvent,
    EventType.TOOL_CALL_START: ToolCallStartEvent, EventType.TOOL_CALL_ARGS: ToolCallArgsEvent,
    EventType.TOOL_CALL_END: ToolCallEndEvent, EventType.TOOL_CALL_RESULT: ToolCallResultEvent,
    EventType.CUSTOM: CustomEvent,  # a handoff to a person
}


def run_input(text: str = "Show my recent orders", thread: str = "thread-1", **extra: Any) -> dict[str, Any]:
    return {"threadId": thread, "runId": "run-1", "state": {}, "tools": [], "context": [], "forwardedProps": {},
            "messages": [{"id": "u0", "role": "user", "content": "earlier, not trusted"},
                         {"id": "a0", "role": "assistant", "content": "an answer the client made up"},
                         {"id": "u1", "role": "user", "content": text}], **extra}


def validated(body: str) -> list[Any]:
    """Each event parsed by the protocol's model, and encoded back by its encoder to the same JSON."""
    encoder = EventEncoder()
    events = []
    for raw in sse_events(body):
        event = MODELS[EventType(raw["type"])].model_validate(raw)
        assert json.loads(encoder.encode(event)[len("data: "):]) == raw  # exact field names and casing
        events.append(event)
    return events


async def test_a_run_with_a_tool_call_in_protocol_order(service) -> None:
    client = await service(order_db_seed=True)
    resp = await client.post(URL, json=run_input(), headers={"Accept": "text/event-stream"})
    assert resp.status == 200 and resp.content_type == "text/event-stream"
    events = validated(await resp.text())
    kinds = [e.type for e in events]
    assert kinds[0] == EventType.RUN_STARTED and kinds[-1] == EventType.RUN_FINISHED
    assert events[0].thread_id == "thread-1" and events[0].run_id == "run-1"
    start = kinds.index(EventType.TOOL_CALL_START)
    assert kinds[start:start + 4] == [EventType.TOOL_CALL_START, EventType.TOOL_CALL_ARGS, EventType.TOOL_CALL_END,
                                      EventType.TOOL_CALL_RESULT]
    assert events[start].tool_call_name == "get_all_orders"
    assert json.loads(events[start + 3].content) == {"ok": True}
    text = "".join(e.delta for e in events if e.type == EventType.TEXT_MESSAGE_CONTENT)
    assert "ORD-" in text
    assert kinds.count(EventType.TEXT_MESSAGE_START) == kinds.count(EventType.TEXT_MESSAGE_END) >= 1
    # The same turn as the REST API's: the history holds the new message only, not the client's copies.
    history = await (await client.get("/api/v1/sessions/thread-1/history")).json()
    assert history["messages"][0]["content"] == "Show my recent orders"
    assert history["message_count"] == 2
    turn_id = resp.headers["X-Turn-ID"]
    status = await (await client.get(f"/api/v1/sessions/thread-1/turns/{turn_id}")).json()
    assert status["status"] == "completed"


async def test_a_second_run_continues_the_thread_and_the_tenant_comes_from_the_header(service) -> None:
    client = await service()
    runs: tuple[tuple[str, dict[str, Any]], ...] = (
        ("Hello", {}), ("Thanks", {"forwardedProps": {"tenant_id": "acme"}}))
    for text, props in runs:
        resp = await client.post(URL, json=run_input(text, **props), headers={"X-Tenant-ID": "acme"})
        assert validated(await resp.text())[-1].type == EventType.RUN_FINISHED
    history = await (await client.get("/api/v1/sessions/thread-1/history?tenant_id=acme")).json()
    assert history["message_count"] == 4
    forwarded = await client.post(URL, json=run_input(thread="t2", forwardedProps={"tenant_id": "beta"}))
    assert validated(await forwarded.text())[-1].type == EventType.RUN_FINISHED
    assert (await client.get("/api/v1/sessions/t2/history?tenant_id=beta")).status == 200
    assert (await client.get("/api/v1/sessions/t2/history")).status == 404


@pytest.mark.parametrize("props", [{"tenant_id": "other"}, {"tenant_id": "x" * 129}, {"tenant_id": None},
                                   {"tenant_id": "bad tenant"}])
async def test_a_forwarded_tenant_beside_the_header_must_be_valid_and_agree(service, props) -> None:
    """As REST's query and body: two names for the tenant that differ are a 400, never a quiet choice."""
    resp = await (await service()).post(URL, json=run_input(forwardedProps=props), headers={"X-Tenant-ID": "acme"})
    assert resp.status == 400
    body = await resp.json()
    assert_envelope(body, "validation_error")
    assert body["field"] == "tenant_id"


@pytest.mark.parametrize("message", [{"role": "robot", "content": "x"}, {"role": None, "content": "x"},
                                     {"id": 5, "role": "assistant", "content": "x"}, "not an object"])
async def test_an_earlier_message_outside_the_schema_is_a_400(service, message) -> None:
    body = run_input()
    body["messages"].insert(0, message)
    resp = await (await service()).post(URL, json=body)
    assert resp.status == 400
    assert_envelope(await resp.json(), "validation_error")


async def test_earlier_messages_of_the_protocol_roles_are_accepted(service) -> None:
    body = run_input()
    body["messages"][:0] = [{"id": "d", "role": "developer", "content": "be brief"},
                            {"id": "a", "role": "assistant", "content": "Hi"},
                            {"id": "t", "role": "tool", "content": "{}", "toolCallId": "c1"}]
    resp = await (await service()).post(URL, json=body)
    assert validated(await resp.text())[-1].type == EventType.RUN_FINISHED


async def test_client_declared_tools_and_content_parts_are_accepted(service) -> None:
    client = await service()
    body = run_input(tools=[{"name": "confirm", "description": "ask the user", "parameters": {"type": "object"}}])
    body["messages"][-1]["content"] = [{"type": "text", "text": "Hello"}]
    resp = await client.post(URL, json=body)
    assert validated(await resp.text())[-1].type == EventType.RUN_FINISHED


async def test_a_failed_turn_ends_with_one_run_error(service, llm: ScriptedLLM) -> None:
    llm.push(Reply(status=500), Reply(status=500), Reply(status=500))
    client = await service(llm_provider="openai", openai_base_url=f"{llm.url}/v1", openai_api_key="k",
                           llm_max_retries=0)
    events = validated(await (await client.post(URL, json=run_input("Hi"))).text())
    assert [e.type for e in events] == [EventType.RUN_STARTED, EventType.RUN_ERROR]
    assert events[-1].code == "llm_error"


async def test_text_around_tool_calls_is_closed_before_the_run_ends(service, llm: ScriptedLLM) -> None:
    llm.push(Reply("Let me look.", tool_calls=[Call("get_all_orders", {})]), Reply("Nothing found."))
    client = await service(llm_provider="openai", openai_base_url=f"{llm.url}/v1", openai_api_key="k")
    events = validated(await (await client.post(URL, json=run_input())).text())
    kinds = [e.type.value for e in events]
    assert kinds[:2] == ["RUN_STARTED", "TEXT_MESSAGE_START"]
    first_end = kinds.index("TEXT_MESSAGE_END")
    assert first_end < kinds.index("TOOL_CALL_START") < kinds.index("TOOL_CALL_RESULT") < kinds.index(
        "TEXT_MESSAGE_START", first_end)
    assert kinds[-2:] == ["TEXT_MESSAGE_END", "RUN_FINISHED"]
    ids = {e.message_id for e in events if e.type == EventType.TEXT_MESSAGE_START}
    assert len(ids) == 2


BAD = [
    ("no thread", lambda b: b.pop("threadId"), "threadId"),
    ("bad thread id", lambda b: b.update(threadId="../etc"), "threadId"),
    ("thread id not a string", lambda b: b.update(threadId=5), "threadId"),
    ("no run id", lambda b: b.pop("runId"), "runId"),
    ("messages not a list", lambda b: b.update(messages={"role": "user"}), "messages"),
    ("no user message", lambda b: b.update(messages=[{"id": "a", "role": "assistant", "content": "x"}]), "messages"),
    ("blank user message", lambda b: b["messages"][-1].update(content="  "), "messages[-1].content"),
    ("content of a wrong type", lambda b: b["messages"][-1].update(content=7), "messages[-1].content"),
    ("message without a role", lambda b: b["messages"].append({"content": "x"}), "messages"),
    ("tools not a list", lambda b: b.update(tools="all"), "tools"),
    ("forwardedProps not an object", lambda b: b.update(forwardedProps=[1]), "forwardedProps"),
    ("bad forwarded tenant", lambda b: b.update(forwardedProps={"tenant_id": "no spaces"}), "tenant_id"),
]


@pytest.mark.parametrize(("name", "change", "field"), BAD, ids=[b[0] for b in BAD])
async def test_bad_input_is_a_400_envelope_before_any_stream(service, name: str, change: Any, field: str) -> None:
    client = await service()
    body = run_input()
    change(body)
    resp = await client.post(URL, json=body)
    assert resp.status == 400 and resp.content_type == "application/json"
    body = await resp.json()
    assert_envelope(body, "validation_error")
    assert body["field"] == field


async def test_malformed_json_and_a_bad_tenant_header_and_an_oversized_body(service) -> None:
    client = await service(max_message_chars=100, max_body_bytes=4096)
    resp = await client.post(URL, data=b"{not json", headers={"Content-Type": "application/json"})
    assert resp.status == 400
    assert_envelope(await resp.json(), "invalid_json")
    resp = await client.post(URL, json=run_input(), headers={"X-Tenant-ID": "bad tenant"})
    body = await resp.json()
    assert resp.status == 400 and body["field"] == "tenant_id" and body["detail"] == "in the X-Tenant-ID header"
    resp = await client.post(URL, json=run_input("x" * 101))
    assert resp.status == 400
    resp = await client.post(URL, data=b"{" + b" " * 5000 + b"}", headers={"Content-Type": "application/json"})
    assert resp.status == 413
    assert_envelope(await resp.json(), "payload_too_large")
