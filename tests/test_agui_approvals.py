"""AG-UI and turns that wait (issue 23, rule 8): an approval is an interrupt, a run with `resume`
entries continues it, frontend tools end the run and a `tool` message continues it. Every event
is checked with the protocol's own Python types (ag_ui.core 1.0), the run input too."""

from __future__ import annotations

import json
from typing import Any

import pytest
from ag_ui.core import EventType, RunAgentInput

from msev15.store.context import ORDERS
from tests.llm_server import Call, Reply, ScriptedLLM
from tests.test_agui import URL, validated

T = "default"


async def _service(service: Any, llm: ScriptedLLM) -> Any:
    return await service(llm_provider="openai", openai_base_url=f"{llm.url}/v1", openai_api_key="k",
                         llm_max_retries=0, tool_approval=("update_order_status",))


def _input(run: str, messages: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    body = {"threadId": "thread-1", "runId": run, "state": {}, "tools": [], "context": [], "forwardedProps": {},
            "messages": messages or [{"id": "u1", "role": "user", "content": "Cancel my order"}], **extra}
    RunAgentInput.model_validate(body)  # what we send is a valid RunAgentInput
    return body


async def _order(client: Any) -> str:
    return str((await client.app[ORDERS].create(T, "CUST-1", "SKU-1", 1, 10, "1 Main St, Springfield"))["order_id"])


def _cancel(order_id: str, call_id: str = "c-upd") -> Call:
    return Call("update_order_status", {"order_id": order_id, "status": "cancelled"}, call_id)


async def test_an_approval_interrupts_the_run_and_a_resume_continues_it(service, llm: ScriptedLLM) -> None:
    client = await _service(service, llm)
    order_id = await _order(client)
    llm.push(Reply("", tool_calls=[_cancel(order_id)]), Reply("It is cancelled."))
    events = validated(await (await client.post(URL, json=_input("run-1"))).text())
    kinds = [e.type for e in events]
    assert kinds == [EventType.RUN_STARTED, EventType.TOOL_CALL_START, EventType.TOOL_CALL_ARGS,
                     EventType.TOOL_CALL_END, EventType.RUN_FINISHED]
    outcome = events[-1].outcome
    assert outcome.type == "interrupt"
    [interrupt] = outcome.interrupts
    assert interrupt.id == "c-upd" and interrupt.tool_call_id == "c-upd" and interrupt.reason == "tool_approval"
    assert interrupt.message
    assert str((await client.app[ORDERS].get(T, order_id))["status"]) == "pending"

    resume = [{"interruptId": "c-upd", "status": "resolved", "payload": {"approved": True}}]
    events = validated(await (await client.post(URL, json=_input("run-2", resume=resume))).text())
    kinds = [e.type for e in events]
    assert kinds[0] == EventType.RUN_STARTED and kinds[-1] == EventType.RUN_FINISHED
    assert EventType.TOOL_CALL_RESULT in kinds and events[-1].outcome is None
    assert str((await client.app[ORDERS].get(T, order_id))["status"]) == "cancelled"
    assert llm.rejected == []


async def test_a_cancelled_resume_rejects(service, llm: ScriptedLLM) -> None:
    client = await _service(service, llm)
    order_id = await _order(client)
    llm.push(Reply("", tool_calls=[_cancel(order_id)]), Reply("I left it."))
    assert validated(await (await client.post(URL, json=_input("run-1"))).text())[-1].outcome.type == "interrupt"
    resume = [{"interruptId": "c-upd", "status": "cancelled"}]
    events = validated(await (await client.post(URL, json=_input("run-2", resume=resume))).text())
    assert events[-1].type == EventType.RUN_FINISHED
    assert str((await client.app[ORDERS].get(T, order_id))["status"]) == "pending"
    assert "cancelled" in json.dumps(llm.requests[-1]) and llm.rejected == []


@pytest.mark.parametrize("resume, code", [
    ([{"interruptId": "nope", "status": "resolved", "payload": {"approved": True}}], "pending_not_found"),
    ([{"interruptId": "c-upd", "status": "resolved", "payload": {"yes": 1}}], "validation_error"),
    ([{"interruptId": "c-upd", "status": "maybe"}], "validation_error"),
    ([{"status": "resolved"}], "validation_error"),
])
async def test_bad_or_unknown_resume_entries_get_run_error(service, llm: ScriptedLLM, resume: Any,
                                                           code: str) -> None:
    client = await _service(service, llm)
    llm.push(Reply("", tool_calls=[_cancel(await _order(client))]))
    assert validated(await (await client.post(URL, json=_input("run-1"))).text())[-1].outcome.type == "interrupt"
    body = _input("run-2")
    body["resume"] = resume  # sent as is: some are not valid RunAgentInput on purpose
    events = validated(await (await client.post(URL, json=body)).text())
    assert [e.type for e in events] == [EventType.RUN_STARTED, EventType.RUN_ERROR]
    assert events[-1].code == code
    assert len(llm.requests) == 1  # nothing ran


async def test_a_frontend_tool_ends_the_run_and_a_tool_message_continues_it(service, llm: ScriptedLLM) -> None:
    client = await _service(service, llm)
    tool = {"name": "confirm_address", "description": "Ask the user to confirm their address",
            "parameters": {"type": "object", "properties": {"address": {"type": "string"}}}}
    llm.push(Reply("", tool_calls=[Call("confirm_address", {"address": "1 Main St"}, "c-ui")]),
             Reply("Thanks for confirming."))
    events = validated(await (await client.post(URL, json=_input("run-1", tools=[tool]))).text())
    assert [e.type for e in events][-2:] == [EventType.TOOL_CALL_END, EventType.RUN_FINISHED]
    assert events[-1].outcome.type == "success" and events[-1].outcome.pending_tool_call_ids == ["c-ui"]
    assert any(t["function"]["name"] == "confirm_address" for t in llm.requests[0]["tools"])
    messages: list[dict[str, Any]] = [{"id": "u1", "role": "user", "content": "Cancel my order"},
                {"id": "a1", "role": "assistant", "toolCalls": [
                    {"id": "c-ui", "type": "function",
                     "function": {"name": "confirm_address", "arguments": "{\"address\": \"1 Main St\"}"}}]},
                {"id": "t1", "role": "tool", "toolCallId": "c-ui", "content": "{\"confirmed\": true}"}]
    events = validated(await (await client.post(URL, json=_input("run-2", messages, tools=[tool]))).text())
    assert events[-1].type == EventType.RUN_FINISHED and events[-1].outcome is None
    assert llm.rejected == []
    assert "confirmed" in json.dumps(llm.requests[-1])
    assert len(llm.requests) == 2  # the tool message continued the paused turn; no new turn started
