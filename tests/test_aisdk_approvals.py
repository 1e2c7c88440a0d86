"""The AI SDK UI message stream and turns that wait (issue 23, rule 9): an approval streams
`tool-approval-request`; the next request's tool part in `approval-responded` continues the turn
in that response; client tools from the body's `tools` finish the message and a part in
`output-available` continues it. (The real `ai@6` client drives the same flow in tests/js.)"""

from __future__ import annotations

import json
from typing import Any

import pytest

from msev15.store.context import ORDERS
from tests.conftest import assert_envelope, sse_events
from tests.llm_server import Call, Reply, ScriptedLLM

URL = "/api/v1/ai-sdk/chat"
T = "default"


async def _service(service: Any, llm: ScriptedLLM) -> Any:
    return await service(llm_provider="openai", openai_base_url=f"{llm.url}/v1", openai_api_key="k",
                         llm_max_retries=0, tool_approval=("update_order_status",))


def _user(text: str = "Cancel my order") -> dict[str, Any]:
    return {"id": "u1", "role": "user", "parts": [{"type": "text", "text": text}]}


def _parts(body: str) -> list[dict[str, Any]]:
    return [p for p in sse_events(body.replace("data: [DONE]", ""))]


async def test_an_approval_request_then_the_response_continues_the_turn(service, llm: ScriptedLLM) -> None:
    client = await _service(service, llm)
    order = await client.app[ORDERS].create(T, "CUST-1", "SKU-1", 1, 10, "1 Main St, Springfield")
    call = Call("update_order_status", {"order_id": order["order_id"], "status": "cancelled"}, "c-upd")
    llm.push(Reply("", tool_calls=[call]), Reply("It is cancelled."))
    resp = await client.post(URL, json={"id": "chat-1", "messages": [_user()], "trigger": "submit-message"})
    parts = _parts(await resp.text())
    kinds = [p["type"] for p in parts]
    assert kinds == ["start", "start-step", "tool-input-available", "tool-approval-request", "finish-step", "finish"]
    assert parts[3] == {"type": "tool-approval-request", "approvalId": "c-upd", "toolCallId": "c-upd"}
    assert parts[-1]["finishReason"] == "tool-calls"
    assistant = {"id": "a1", "role": "assistant", "parts": [
        {"type": "tool-update_order_status", "toolCallId": "c-upd", "state": "approval-responded",
         "input": {"order_id": order["order_id"], "status": "cancelled"},
         "approval": {"id": "c-upd", "approved": True}}]}
    resp = await client.post(URL, json={"id": "chat-1", "messages": [_user(), assistant],
                                        "trigger": "submit-message"})
    kinds = [p["type"] for p in _parts(await resp.text())]
    assert "tool-output-available" in kinds and kinds[-1] == "finish"
    assert str((await client.app[ORDERS].get(T, order["order_id"]))["status"]) == "cancelled"
    assert llm.rejected == [] and len(llm.requests) == 2


async def test_a_rejected_approval_response_is_not_run(service, llm: ScriptedLLM) -> None:
    client = await _service(service, llm)
    order = await client.app[ORDERS].create(T, "CUST-1", "SKU-1", 1, 10, "1 Main St, Springfield")
    llm.push(Reply("", tool_calls=[Call("update_order_status", {"order_id": order["order_id"],
                                                                "status": "cancelled"}, "c-upd")]), Reply("Kept."))
    await (await client.post(URL, json={"id": "chat-1", "messages": [_user()]})).text()
    assistant = {"id": "a1", "role": "assistant", "parts": [
        {"type": "tool-update_order_status", "toolCallId": "c-upd", "state": "approval-responded", "input": {},
         "approval": {"id": "c-upd", "approved": False, "reason": "keep it"}}]}
    await (await client.post(URL, json={"id": "chat-1", "messages": [_user(), assistant]})).text()
    assert str((await client.app[ORDERS].get(T, order["order_id"]))["status"]) == "pending"
    assert "keep it" in json.dumps(llm.requests[-1]) and llm.rejected == []


async def test_a_client_tool_finishes_the_message_and_its_output_continues(service, llm: ScriptedLLM) -> None:
    client = await _service(service, llm)
    tool = {"name": "get_location", "description": "The user's city", "parameters": {"type": "object"}}
    llm.push(Reply("", tool_calls=[Call("get_location", {}, "c-loc")]), Reply("You are in Porto."))
    parts = _parts(await (await client.post(URL, json={"id": "chat-1", "messages": [_user("Where am I?")],
                                                       "tools": [tool]})).text())
    assert [p["type"] for p in parts] == ["start", "start-step", "tool-input-available", "finish-step", "finish"]
    assistant = {"id": "a1", "role": "assistant", "parts": [
        {"type": "tool-get_location", "toolCallId": "c-loc", "state": "output-available", "input": {},
         "output": {"city": "Porto"}}]}
    parts = _parts(await (await client.post(URL, json={"id": "chat-1", "tools": [tool],
                                                       "messages": [_user("Where am I?"), assistant]})).text())
    assert parts[-1]["finishReason"] == "stop"
    assert "Porto" in json.dumps(llm.requests[-1]) and llm.rejected == []


@pytest.mark.parametrize("approval, field", [({"id": "c-upd"}, "approve"), ({"approved": "yes"}, "approve")])
async def test_a_bad_approval_response_is_400(service, llm: ScriptedLLM, approval: Any, field: str) -> None:
    client = await _service(service, llm)
    llm.push(Reply("", tool_calls=[Call("update_order_status", {"order_id": "ORD-X", "status": "cancelled"},
                                        "c-upd")]))
    await (await client.post(URL, json={"id": "chat-1", "messages": [_user()]})).text()
    assistant = {"id": "a1", "role": "assistant", "parts": [
        {"type": "tool-update_order_status", "toolCallId": "c-upd", "state": "approval-responded", "input": {},
         "approval": approval}]}
    resp = await client.post(URL, json={"id": "chat-1", "messages": [_user(), assistant]})
    assert resp.status == 400
    body = await resp.json()
    assert_envelope(body, "validation_error")
    assert body["field"] == field


async def test_bad_client_tools_are_400(service, llm: ScriptedLLM) -> None:
    client = await _service(service, llm)
    resp = await client.post(URL, json={"id": "chat-1", "messages": [_user()],
                                        "tools": [{"name": "get_order_by_id", "parameters": {"type": "object"}}]})
    assert resp.status == 400
    body = await resp.json()
    assert_envelope(body, "validation_error")
    assert body["field"] == "tools[0].name"
