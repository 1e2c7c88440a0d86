"""The AI SDK UI message stream at POST /api/v1/ai-sdk/chat and its resume route."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import pytest

from tests.complaints.server import eventually
from tests.conftest import assert_envelope
from tests.llm_server import Call, Reply, ScriptedLLM

URL = "/api/v1/ai-sdk/chat"


def chat_body(text: str = "Show my recent orders", chat_id: str = "chat-1", **extra: Any) -> dict[str, Any]:
    """What DefaultChatTransport sends for sendMessage()."""
    return {"id": chat_id, "trigger": "submit-message", "messageId": None,
            "messages": [{"id": "u0", "role": "user", "parts": [{"type": "text", "text": "not trusted"}]},
                         {"id": "a0", "role": "assistant", "parts": [{"type": "text", "text": "made up"}]},
                         {"id": "u1", "role": "user", "parts": [{"type": "text", "text": text}]}], **extra}


def parts(body: str) -> list[Any]:
    """The stream's data lines: JSON parts, then the literal [DONE]."""
    lines = [line[len("data: "):] for line in re.split(r"\r\n|\r|\n", body) if line.startswith("data: ")]
    assert lines[-1] == "[DONE]" and lines.count("[DONE]") == 1, lines[-3:]
    return [json.loads(line) for line in lines[:-1]]


async def test_a_turn_with_a_tool_call(service) -> None:
    client = await service(order_db_seed=True)
    resp = await client.post(URL, json=chat_body())
    assert resp.status == 200 and resp.content_type == "text/event-stream"
    assert resp.headers["x-vercel-ai-ui-message-stream"] == "v1"
    got = parts(await resp.text())
    kinds = [p["type"] for p in got]
    assert kinds[:2] == ["start", "start-step"] and kinds[-2:] == ["finish-step", "finish"]
    assert got[0]["messageMetadata"]["turnId"] == resp.headers["X-Turn-ID"]
    call = got[kinds.index("tool-input-available")]
    assert call["toolName"] == "get_all_orders" and isinstance(call["input"], dict)
    output = got[kinds.index("tool-output-available")]
    assert output == {"type": "tool-output-available", "toolCallId": call["toolCallId"], "output": {"ok": True}}
    text = "".join(p["delta"] for p in got if p["type"] == "text-delta")
    assert "ORD-" in text
    # every text block is opened and closed with one id; the answer after the tool is a new step
    assert kinds.count("text-start") == kinds.count("text-end")
    assert kinds.index("tool-output-available") < kinds.index("start-step", 2) < kinds.index("text-start")
    history = await (await client.get("/api/v1/sessions/chat-1/history")).json()
    assert history["messages"][0]["content"] == "Show my recent orders" and history["message_count"] == 2


async def test_the_tenant_comes_from_the_header(service) -> None:
    client = await service()
    resp = await client.post(URL, json=chat_body("Hello"), headers={"X-Tenant-ID": "acme"})
    assert parts(await resp.text())[-1]["type"] == "finish"
    assert (await client.get("/api/v1/sessions/chat-1/history?tenant_id=acme")).status == 200
    assert (await client.get("/api/v1/sessions/chat-1/history")).status == 404


async def test_a_failed_turn_ends_with_error_then_done(service, llm: ScriptedLLM) -> None:
    llm.push(Reply(status=500))
    client = await service(llm_provider="openai", openai_base_url=f"{llm.url}/v1", openai_api_key="k",
                           llm_max_retries=0)
    got = parts(await (await client.post(URL, json=chat_body("Hi"))).text())
    assert [p["type"] for p in got] == ["start", "start-step", "error"]
    assert got[-1]["errorText"].startswith("llm_error")


async def test_resume_streams_the_running_turn_from_its_start_or_answers_204(service, llm: ScriptedLLM) -> None:
    gate = asyncio.Event()
    llm.push(Reply("one two three four", gate=gate, gate_after=2))
    client = await service(llm_provider="openai", openai_base_url=f"{llm.url}/v1", openai_api_key="k")
    assert (await client.get(f"{URL}/chat-1/stream")).status == 204
    first = await client.post(URL, json=chat_body("Hi"))
    await eventually(lambda: llm.streams_started == 1, "the model stream started")
    resumed = await client.get(f"{URL}/chat-1/stream")
    assert resumed.status == 200 and resumed.headers["X-Turn-ID"] == first.headers["X-Turn-ID"]
    other_tenant = await client.get(f"{URL}/chat-1/stream", headers={"X-Tenant-ID": "other"})
    assert other_tenant.status == 204
    gate.set()
    a, b = parts(await first.text()), parts(await resumed.text())
    assert a == b and "".join(p["delta"] for p in a if p["type"] == "text-delta") == "one two three four"
    assert (await client.get(f"{URL}/chat-1/stream")).status == 204


async def test_failed_tool_is_a_tool_output_error(service, llm: ScriptedLLM) -> None:
    llm.push(Reply(tool_calls=[Call("get_order_by_id", {"order_id": 5})]), Reply("Sorry."))
    client = await service(llm_provider="openai", openai_base_url=f"{llm.url}/v1", openai_api_key="k")
    got = parts(await (await client.post(URL, json=chat_body())).text())
    kinds = [p["type"] for p in got]
    assert "tool-output-error" in kinds and kinds[-1] == "finish"


BAD = [
    ("no id", lambda b: b.pop("id"), "id"),
    ("bad id", lambda b: b.update(id="a b"), "id"),
    ("messages not a list", lambda b: b.update(messages="hi"), "messages"),
    ("no user message", lambda b: b.update(messages=[{"role": "assistant", "parts": []}]), "messages"),
    ("parts not a list", lambda b: b["messages"][-1].update(parts="hi"), "messages"),
    ("text of a wrong type", lambda b: b["messages"][-1].update(parts=[{"type": "text", "text": 3}]), "messages"),
    ("no text", lambda b: b["messages"][-1].update(parts=[{"type": "file", "url": "x"}]), "messages[-1].parts"),
    ("unknown trigger", lambda b: b.update(trigger="rerun"), "trigger"),
    ("messageId not a string", lambda b: b.update(messageId=3), "messageId"),
    ("trigger null", lambda b: b.update(trigger=None), "trigger"),
    ("an earlier message of an unknown role", lambda b: b["messages"][0].update(role="robot"), "messages"),
    ("an earlier message's part of an unknown type", lambda b: b["messages"][1].update(
        parts=[{"type": "bogus"}]), "messages"),
    ("an earlier message's part without a type", lambda b: b["messages"][1].update(parts=[{"text": "x"}]),
     "messages"),
    ("an earlier message's id not a string", lambda b: b["messages"][0].update(id=7), "messages"),
    ("an earlier message's text part with a non-string text", lambda b: b["messages"][1].update(
        parts=[{"type": "text", "text": None}]), "messages"),
]


async def test_earlier_messages_of_the_protocol_shapes_are_accepted(service) -> None:
    body = chat_body()
    body["messages"][1]["parts"] = [{"type": "step-start"}, {"type": "text", "text": "Here"},
                                    {"type": "tool-get_order_by_id", "toolCallId": "c1", "state": "output-available"},
                                    {"type": "data-weather", "data": {}}, {"type": "reasoning", "text": "hm"}]
    body["messages"].insert(0, {"id": "s0", "role": "system", "parts": [{"type": "text", "text": "be brief"}]})
    resp = await (await service()).post(URL, json=body)
    assert resp.status == 200
    assert "data: [DONE]" in await resp.text()


@pytest.mark.parametrize(("name", "change", "field"), BAD, ids=[b[0] for b in BAD])
async def test_bad_input_is_a_400_envelope_before_any_stream(service, name: str, change: Any, field: str) -> None:
    client = await service()
    body = chat_body()
    change(body)
    resp = await client.post(URL, json=body)
    assert resp.status == 400 and resp.content_type == "application/json"
    body = await resp.json()
    assert_envelope(body, "validation_error")
    assert body["field"] == field


async def test_malformed_oversized_and_bad_tenant(service) -> None:
    client = await service(max_message_chars=50, max_body_bytes=4096)
    resp = await client.post(URL, data=b"[1,", headers={"Content-Type": "application/json"})
    assert resp.status == 400
    assert_envelope(await resp.json(), "invalid_json")
    resp = await client.post(URL, json=chat_body("x" * 51))
    assert resp.status == 400
    resp = await client.post(URL, data=b'{"id": "' + b"a" * 5000 + b'"}', headers={"Content-Type": "application/json"})
    assert resp.status == 413
    assert_envelope(await resp.json(), "payload_too_large")
    resp = await client.post(URL, json=chat_body(), headers={"X-Tenant-ID": "../x"})
    assert resp.status == 400 and (await resp.json())["field"] == "tenant_id"
    resp = await client.get(f"{URL}/a%20b/stream")
    assert resp.status == 400
