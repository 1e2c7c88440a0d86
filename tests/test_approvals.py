"""Turns that wait for a person (issue 23): the pause, its events and replies, and a history the
model accepts afterwards. The real service (create_app), the scripted OpenAI-compatible server
(which refuses a history with a call and no result, or a result and no call) and real SQLite
orders."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from msev15.store.context import ORDERS
from tests.conftest import sse_events
from tests.llm_server import Call, Reply, ScriptedLLM

T = "t1"


async def _service(service: Any, llm: ScriptedLLM, **overrides: Any) -> TestClient:
    settings: dict[str, Any] = dict(llm_provider="openai", openai_base_url=f"{llm.url}/v1", openai_api_key="k",
                                    llm_max_retries=0, tool_approval=("update_order_status",))
    settings.update(overrides)
    return await service(**settings)


async def _order(client: TestClient) -> str:
    order = await client.app[ORDERS].create(T, "CUST-1", "SKU-1", 1, 10, "1 Main Street, Springfield")
    return str(order["order_id"])


async def _status(client: TestClient, order_id: str) -> str:
    return str((await client.app[ORDERS].get(T, order_id))["status"])


def _cancel(order_id: str, call_id: str = "c-upd") -> Call:
    return Call("update_order_status", {"order_id": order_id, "status": "cancelled"}, call_id)


def _tool_messages(request: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in request["messages"] if m["role"] == "tool"]


async def test_a_call_that_needs_approval_pauses_the_turn_and_is_not_run(service, llm: ScriptedLLM) -> None:
    client = await _service(service, llm)
    order_id = await _order(client)
    llm.push(Reply("Let me cancel that.", tool_calls=[
        Call("get_order_by_id", {"order_id": order_id}, "c-get"), _cancel(order_id)]))
    resp = await client.post("/api/v1/chat", json={"session_id": "s1", "tenant_id": T,
                                                   "message": f"Cancel {order_id}"})
    assert resp.status == 200
    body = await resp.json()
    assert body["status"] == "waiting"
    assert body["message"] == "Let me cancel that."
    assert body["pending"] == [{"kind": "approval", "call_id": "c-upd", "name": "update_order_status",
                                "arguments": {"order_id": order_id, "status": "cancelled"}}]
    assert await _status(client, order_id) == "pending"  # not run
    assert len(llm.requests) == 1  # the model is not asked again while the turn waits
    status = await (await client.get(f"/api/v1/sessions/s1/turns/{body['turn_id']}?tenant_id={T}")).json()
    assert status["status"] == "waiting"
    # Nothing of the paused turn is in the history yet: no call without its result.
    history = await client.get(f"/api/v1/sessions/s1/history?tenant_id={T}")
    assert history.status == 404


async def test_the_stream_announces_the_waiting_call_and_ends_waiting(service, llm: ScriptedLLM) -> None:
    client = await _service(service, llm)
    order_id = await _order(client)
    llm.push(Reply("", tool_calls=[Call("get_order_by_id", {"order_id": order_id}, "c-get"), _cancel(order_id)]))
    resp = await client.post("/api/v1/chat/stream", json={"session_id": "s1", "tenant_id": T, "message": "Cancel it"})
    events = sse_events(await resp.text())
    kinds = [e["type"] for e in events]
    assert kinds == ["tool_call", "tool_call", "tool_result", "input_required", "done"]
    assert events[2]["call_id"] == "c-get" and events[2]["ok"] is True  # the call that needs nothing ran
    turn_id = resp.headers["X-Turn-ID"]
    assert events[3] == {"type": "input_required", "kind": "approval", "call_id": "c-upd",
                         "name": "update_order_status",
                         "arguments": {"order_id": order_id, "status": "cancelled"},
                         "turn_id": turn_id, "session_id": "s1"}
    assert events[4]["status"] == "waiting" and events[4]["pending"] == ["c-upd"]
    assert await _status(client, order_id) == "pending"


async def test_patterns_match_by_fnmatch(service, llm: ScriptedLLM) -> None:
    client = await _service(service, llm, tool_approval=("update_*",))
    order_id = await _order(client)
    llm.push(Reply("", tool_calls=[_cancel(order_id)]))
    body = await (await client.post("/api/v1/chat", json={"session_id": "s1", "tenant_id": T, "message": "x"})).json()
    assert body["status"] == "waiting"


async def test_without_tool_approval_nothing_waits(service, llm: ScriptedLLM) -> None:
    client = await _service(service, llm, tool_approval=())
    order_id = await _order(client)
    llm.push(Reply("", tool_calls=[_cancel(order_id)]), Reply("Cancelled."))
    body = await (await client.post("/api/v1/chat", json={"session_id": "s1", "tenant_id": T, "message": "x"})).json()
    assert "status" not in body and body["message"] == "Cancelled."
    assert await _status(client, order_id) == "cancelled"


@pytest.mark.parametrize("llm_api", ["chat", "responses"])
async def test_a_new_message_supersedes_the_waiting_call_and_the_history_stays_valid(
        service, llm: ScriptedLLM, llm_api: str) -> None:
    client = await _service(service, llm, llm_api=llm_api)
    order_id = await _order(client)
    llm.push(Reply("", tool_calls=[Call("get_order_by_id", {"order_id": order_id}, "c-get"), _cancel(order_id)]),
             Reply("Fine, I will leave it."))
    first = await (await client.post("/api/v1/chat", json={"session_id": "s1", "tenant_id": T,
                                                           "message": "Cancel it"})).json()
    assert first["status"] == "waiting"
    second = await client.post("/api/v1/chat", json={"session_id": "s1", "tenant_id": T,
                                                     "message": "Actually, keep it"})
    assert second.status == 200, await second.text()
    assert (await second.json())["message"] == "Fine, I will leave it."
    assert llm.rejected == []  # the model API accepted the history
    assert await _status(client, order_id) == "pending"
    last = llm.requests[-1]
    text = json.dumps(last)
    assert "superseded" in text
    history = await (await client.get(f"/api/v1/sessions/s1/history?tenant_id={T}")).json()
    assert [m["role"] for m in history["messages"]] == ["user", "assistant", "user", "assistant"]
