"""Client tools over REST (issue 23, rule 6): tools the caller declares in `tools` and runs itself.
The model is offered them; a call waits for the client's output, which the model then reads."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import assert_envelope, sse_events
from tests.llm_server import Call, Reply, ScriptedLLM

T = "t1"
LOCATE = {"name": "get_location", "description": "The customer's current city, from the browser.",
          "parameters": {"type": "object", "properties": {"precision": {"type": "string"}}}}


async def _service(service: Any, llm: ScriptedLLM, **overrides: Any) -> TestClient:
    return await service(llm_provider="openai", openai_base_url=f"{llm.url}/v1", openai_api_key="k",
                         llm_max_retries=0, **overrides)


def _offered(request: dict[str, Any]) -> list[str]:
    return [t["function"]["name"] if "function" in t else t["name"] for t in request.get("tools") or []]


@pytest.mark.parametrize("llm_api", ["chat", "responses"])
async def test_a_client_tool_call_waits_for_its_output_then_the_model_reads_it(
        service, llm: ScriptedLLM, llm_api: str) -> None:
    client = await _service(service, llm, llm_api=llm_api)
    llm.push(Reply("", tool_calls=[Call("get_location", {"precision": "city"}, "c-loc")]))
    resp = await client.post("/api/v1/chat", json={"session_id": "s1", "tenant_id": T, "message": "Where am I?",
                                                   "tools": [LOCATE]})
    body = await resp.json()
    assert resp.status == 200 and body["status"] == "waiting"
    assert body["pending"] == [{"kind": "client_tool", "call_id": "c-loc", "name": "get_location",
                                "arguments": {"precision": "city"}}]
    assert "get_location" in _offered(llm.requests[0]) and "get_order_by_id" in _offered(llm.requests[0])
    pending = await (await client.get(f"/api/v1/sessions/s1/pending?tenant_id={T}")).json()
    assert pending["pending"][0]["kind"] == "client_tool"
    llm.push(Reply("You are in Lisbon."))
    decided = await client.post(f"/api/v1/sessions/s1/pending/c-loc?tenant_id={T}", json={"output": {"city": "Lisbon"}})
    assert decided.status == 202
    turn_id = (await decided.json())["turn_id"]
    events = sse_events(await (await client.get(f"/api/v1/sessions/s1/turns/{turn_id}/events?tenant_id={T}")).text())
    assert events[0] == {"type": "tool_result", "name": "get_location", "call_id": "c-loc", "ok": True,
                         "session_id": "s1"}
    assert events[-1]["type"] == "done"
    assert llm.rejected == []
    assert "Lisbon" in json.dumps(llm.requests[-1])
    assert "get_location" in _offered(llm.requests[-1])  # offered to the continuation too


async def test_the_wrong_body_for_a_client_tool_is_400(service, llm: ScriptedLLM) -> None:
    client = await _service(service, llm)
    llm.push(Reply("", tool_calls=[Call("get_location", {}, "c-loc")]))
    await client.post("/api/v1/chat", json={"session_id": "s1", "tenant_id": T, "message": "x", "tools": [LOCATE]})
    for body, field in (({"approve": True}, "approve"), ({}, "output")):
        resp = await client.post(f"/api/v1/sessions/s1/pending/c-loc?tenant_id={T}", json=body)
        assert resp.status == 400
        error = await resp.json()
        assert_envelope(error, "validation_error")
        assert error["field"] == field


async def test_a_new_message_gives_a_waiting_client_tool_an_error_result(service, llm: ScriptedLLM) -> None:
    client = await _service(service, llm)
    llm.push(Reply("", tool_calls=[Call("get_location", {}, "c-loc")]), Reply("Hello."))
    await client.post("/api/v1/chat/stream", json={"session_id": "s1", "tenant_id": T, "message": "x",
                                                   "tools": [LOCATE]})
    resp = await client.post("/api/v1/chat", json={"session_id": "s1", "tenant_id": T, "message": "never mind"})
    assert resp.status == 200 and llm.rejected == []
    tool = next(m for m in llm.requests[-1]["messages"] if m["role"] == "tool")
    assert "returned no result" in tool["content"]
    assert "get_location" not in _offered(llm.requests[-1])  # a client tool lives for its turn only


async def test_a_tool_declared_twice_is_offered_once(service, llm: ScriptedLLM) -> None:
    client = await _service(service, llm)
    other = {**LOCATE, "description": "a second declaration"}
    resp = await client.post("/api/v1/chat", json={"session_id": "s1", "tenant_id": T, "message": "x",
                                                   "tools": [LOCATE, other]})
    assert resp.status == 200
    offered = [t for t in llm.requests[0]["tools"] if t["function"]["name"] == "get_location"]
    assert [t["function"]["description"] for t in offered] == [LOCATE["description"]]


@pytest.mark.parametrize("tools, field", [
    ({"name": "x"}, "tools"),
    ([LOCATE] * 33, "tools"),
    (["get_location"], "tools[0]"),
    ([{**LOCATE, "name": "bad name"}], "tools[0].name"),
    ([{**LOCATE, "name": "x" * 65}], "tools[0].name"),
    ([{**LOCATE, "name": "get_order_by_id"}], "tools[0].name"),
    ([{"name": "a", "description": "d"}], "tools[0].parameters"),
    ([{**LOCATE, "parameters": {"type": "string"}}], "tools[0].parameters"),
    ([{**LOCATE, "parameters": {"type": "object", "properties": 5}}], "tools[0].parameters"),
    ([{**LOCATE, "description": 5}], "tools[0].description"),
    ([{**LOCATE, "run": "rm"}], "tools[0].run"),
])
async def test_bad_tools_are_400_naming_the_field(service, llm: ScriptedLLM, tools: Any, field: str) -> None:
    client = await _service(service, llm)
    for path in ("/api/v1/chat", "/api/v1/chat/stream"):
        resp = await client.post(path, json={"session_id": "s1", "tenant_id": T, "message": "x", "tools": tools})
        assert resp.status == 400
        error = await resp.json()
        assert_envelope(error, "validation_error")
        assert error["field"] == field
    assert llm.requests == []
