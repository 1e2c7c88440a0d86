"""Turns that wait for a person (issue 23): the pause, its events and replies, and a history the
model accepts afterwards. The real service (create_app), the scripted OpenAI-compatible server
(which refuses a history with a call and no result, or a result and no call) and real SQLite
orders."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from msev15.agent.context import RUNNER
from msev15.store.context import ORDERS
from msev15.store.pending import PENDING
from tests.conftest import assert_envelope, sse_events
from tests.llm_server import Call, Reply, ScriptedLLM
from tests.smtp_server import RecordingSMTP

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


# --- deciding (step 2) -------------------------------------------------------------------------


async def _pause(client: TestClient, llm: ScriptedLLM, order_id: str, *calls: Call,
                 session_id: str = "s1") -> dict[str, Any]:
    llm.push(Reply("Let me do that.", tool_calls=list(calls or [_cancel(order_id)])))
    resp = await client.post("/api/v1/chat", json={"session_id": session_id, "tenant_id": T, "message": "Cancel it"})
    body = await resp.json()
    assert body["status"] == "waiting", body
    return dict(body)


async def _decide(client: TestClient, call_id: str, body: Any, session_id: str = "s1") -> Any:
    return await client.post(f"/api/v1/sessions/{session_id}/pending/{call_id}?tenant_id={T}", json=body)


async def _events(client: TestClient, turn_id: str, session_id: str = "s1") -> list[dict[str, Any]]:
    resp = await client.get(f"/api/v1/sessions/{session_id}/turns/{turn_id}/events?tenant_id={T}")
    assert resp.status == 200
    return sse_events(await resp.text())


async def _pending(client: TestClient, session_id: str = "s1") -> list[dict[str, Any]]:
    body = await (await client.get(f"/api/v1/sessions/{session_id}/pending?tenant_id={T}")).json()
    assert body["session_id"] == session_id
    return list(body["pending"])


async def test_pending_lists_the_waiting_calls(service, llm: ScriptedLLM) -> None:
    client = await _service(service, llm)
    assert await _pending(client) == []
    order_id = await _order(client)
    paused = await _pause(client, llm, order_id)
    [call] = await _pending(client)
    assert call["kind"] == "approval" and call["call_id"] == "c-upd" and call["name"] == "update_order_status"
    assert call["arguments"] == {"order_id": order_id, "status": "cancelled"}
    assert call["turn_id"] == paused["turn_id"]
    assert call["requested_at"].endswith("Z") and call["expires_at"] > call["requested_at"]
    assert await _pending(client, "other") == []


async def test_approved_runs_exactly_once_and_the_turn_continues(service, llm: ScriptedLLM) -> None:
    client = await _service(service, llm)
    order_id = await _order(client)
    await _pause(client, llm, order_id)
    llm.push(Reply("Your order is cancelled."))
    resp = await _decide(client, "c-upd", {"approve": True})
    assert resp.status == 202
    decided = await resp.json()
    assert decided["call_id"] == "c-upd" and decided["remaining"] == 0 and decided["turn_id"]
    events = await _events(client, decided["turn_id"])
    assert [e["type"] for e in events if e["type"] != "token"] == ["tool_result", "done"]
    assert events[0]["call_id"] == "c-upd" and events[0]["ok"] is True
    assert "status" not in events[-1]
    assert await _status(client, order_id) == "cancelled"
    assert llm.rejected == []
    tools = _tool_messages(llm.requests[-1])
    assert len(tools) == 1 and json.loads(tools[0]["content"])["order"]["status"] == "cancelled"
    assert await _pending(client) == []
    again = await _decide(client, "c-upd", {"approve": False})  # decided twice, after the step was settled
    assert again.status == 409
    # The next turn's history is valid and holds the paused turn whole.
    llm.push(Reply("Anything else?"))
    next_turn = await client.post("/api/v1/chat", json={"session_id": "s1", "tenant_id": T, "message": "Thanks"})
    assert next_turn.status == 200 and llm.rejected == []
    roles = [m["role"] for m in llm.requests[-1]["messages"]]
    assert roles == ["system", "user", "assistant", "tool", "assistant", "user"]


async def test_rejected_is_not_run_and_the_model_reads_the_reason(service, llm: ScriptedLLM) -> None:
    client = await _service(service, llm, llm_api="responses")
    order_id = await _order(client)
    await _pause(client, llm, order_id)
    llm.push(Reply("Understood, I kept the order."))
    resp = await _decide(client, "c-upd", {"approve": False, "reason": "The customer changed their mind"})
    assert resp.status == 202
    events = await _events(client, (await resp.json())["turn_id"])
    assert events[0]["type"] == "tool_result" and events[0]["ok"] is False
    assert await _status(client, order_id) == "pending"
    assert llm.rejected == []
    sent = json.dumps(llm.requests[-1])
    assert "declined" in sent and "The customer changed their mind" in sent


async def test_two_waiting_calls_decided_in_either_order(service, llm: ScriptedLLM) -> None:
    client = await _service(service, llm)
    first, second = await _order(client), await _order(client)
    for order in ((first, second), (second, first)):
        session = f"s-{order[0]}"
        await _pause(client, llm, first, _cancel(first, "c-a"), _cancel(second, "c-b"), session_id=session)
        llm.push(Reply("Done."))
        one = await (await _decide(client, "c-b" if order[0] == first else "c-a", {"approve": False},
                                   session)).json()
        assert one["remaining"] == 1 and one["turn_id"] is None
        assert len(await _pending(client, session)) == 1
        two = await (await _decide(client, "c-a" if order[0] == first else "c-b", {"approve": True},
                                   session)).json()
        assert two["remaining"] == 0 and two["turn_id"]
        events = await _events(client, two["turn_id"], session)
        assert sorted(e["call_id"] for e in events if e["type"] == "tool_result") == ["c-a", "c-b"]
        assert llm.rejected == []
        assert [m["tool_call_id"] for m in _tool_messages(llm.requests[-1])] == ["c-a", "c-b"]
    # first round approved c-a (first), second round approved c-b (second)
    assert await _status(client, first) == "cancelled" and await _status(client, second) == "cancelled"


async def test_two_racing_deciders_exactly_one_wins(service, llm: ScriptedLLM) -> None:
    client = await _service(service, llm)
    order_id = await _order(client)
    await _pause(client, llm, order_id)
    llm.push(Reply("Cancelled."))
    replies = await asyncio.gather(*(_decide(client, "c-upd", {"approve": True}) for _ in range(6)))
    statuses = sorted(r.status for r in replies)
    assert statuses == [202, 409, 409, 409, 409, 409]
    for reply in replies:
        if reply.status == 409:
            assert_envelope(await reply.json(), "already_decided")
        else:
            turn_id = (await reply.json())["turn_id"]
    await _events(client, turn_id)
    assert len(llm.requests) == 2  # one pause, one continuation
    assert await _status(client, order_id) == "cancelled"


async def test_unknown_call_is_404(service, llm: ScriptedLLM) -> None:
    client = await _service(service, llm)
    resp = await _decide(client, "c-none", {"approve": True})
    assert resp.status == 404
    assert_envelope(await resp.json(), "pending_not_found")


@pytest.mark.parametrize("body, field", [
    ({"output": {"x": 1}}, "output"),
    ({}, "approve"),
    ({"approve": "yes"}, "approve"),
    ({"approve": False, "reason": 5}, "reason"),
])
async def test_the_wrong_body_for_an_approval_is_400(service, llm: ScriptedLLM, body: Any, field: str) -> None:
    client = await _service(service, llm)
    await _pause(client, llm, await _order(client))
    resp = await _decide(client, "c-upd", body)
    assert resp.status == 400
    error = await resp.json()
    assert_envelope(error, "validation_error")
    assert error["field"] == field
    assert len(await _pending(client)) == 1  # nothing was decided


async def test_expired_calls_are_settled_and_the_history_stays_valid(service, llm: ScriptedLLM) -> None:
    client = await _service(service, llm, pending_timeout_seconds=60)
    order_id = await _order(client)
    await _pause(client, llm, order_id)
    waiting = client.app[RUNNER].waiting
    assert await waiting.expire(now=time.time() + 30) == 0
    assert await waiting.expire(now=time.time() + 61) == 1
    assert await _pending(client) == []
    assert await _status(client, order_id) == "pending"
    resp = await _decide(client, "c-upd", {"approve": True})
    assert resp.status == 404
    llm.push(Reply("Hello again."))
    assert (await client.post("/api/v1/chat", json={"session_id": "s1", "tenant_id": T, "message": "Hi"})).status == 200
    assert llm.rejected == []
    assert "expired" in json.dumps(llm.requests[-1])


async def test_cancel_while_waiting_rejects_the_calls(service, llm: ScriptedLLM) -> None:
    client = await _service(service, llm)
    order_id = await _order(client)
    paused = await _pause(client, llm, order_id)
    resp = await client.post(f"/api/v1/sessions/s1/turns/{paused['turn_id']}/cancel?tenant_id={T}")
    assert resp.status == 202
    assert await _pending(client) == []
    assert (await _decide(client, "c-upd", {"approve": True})).status == 404
    assert await _status(client, order_id) == "pending"
    llm.push(Reply("Hello again."))
    assert (await client.post("/api/v1/chat", json={"session_id": "s1", "tenant_id": T, "message": "Hi"})).status == 200
    assert llm.rejected == [] and "cancelled" in json.dumps(llm.requests[-1])


async def test_cancel_session_while_waiting_rejects_the_calls(service, llm: ScriptedLLM) -> None:
    client = await _service(service, llm)
    order_id = await _order(client)
    await _pause(client, llm, order_id)
    resp = await client.post(f"/api/v1/sessions/s1/cancel?tenant_id={T}")
    assert resp.status == 202 and (await resp.json())["cancelled"] == 1
    assert await _pending(client) == []
    assert await _status(client, order_id) == "pending"


@pytest.mark.parametrize("approve", [False, True])
async def test_a_rejected_send_email_sends_nothing_and_an_approved_one_sends_exactly_one(
        service, llm: ScriptedLLM, approve: bool) -> None:
    async with RecordingSMTP() as smtp:
        client = await _service(service, llm, tool_approval=("send_*",), smtp_server=smtp.host, smtp_port=smtp.port,
                                sender_email="support@shop.test", smtp_timeout_seconds=5.0)
        llm.push(Reply("", tool_calls=[Call("send_email", {"to": "ann@example.com", "subject": "Your order",
                                                           "body": "It shipped."}, "c-mail")]))
        paused = await (await client.post("/api/v1/chat", json={"session_id": "s1", "tenant_id": T,
                                                                "message": "Email me"})).json()
        assert paused["status"] == "waiting" and smtp.messages == []
        llm.push(Reply("Done."))
        decided = await (await _decide(client, "c-mail", {"approve": approve, "reason": "not now"})).json()
        await _events(client, decided["turn_id"])
        assert len(smtp.messages) == (1 if approve else 0)
        assert llm.rejected == []


async def test_metrics_count_requests_and_outcomes_by_tool_and_time_decisions(service, llm: ScriptedLLM) -> None:
    client = await _service(service, llm)
    for session, body in (("s-ok", {"approve": True}), ("s-no", {"approve": False})):
        await _pause(client, llm, await _order(client), session_id=session)
        llm.push(Reply("Done."))
        decided = await (await _decide(client, "c-upd", body, session)).json()
        await _events(client, decided["turn_id"], session)
    await _pause(client, llm, await _order(client), session_id="s-late")
    await client.app[RUNNER].waiting.expire(now=time.time() + 86_401)
    text = await (await client.get("/metrics")).text()

    def value(name: str, **labels: str) -> float:
        wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        line = next(line for line in text.splitlines() if line.startswith(f"{name}{{{wanted}}} "))
        return float(line.rsplit(" ", 1)[1])

    tool = "update_order_status"
    assert value("msev15_approvals_total", outcome="requested", tool=tool) == 3
    assert value("msev15_approvals_total", outcome="approved", tool=tool) == 1
    assert value("msev15_approvals_total", outcome="rejected", tool=tool) == 1
    assert value("msev15_approvals_total", outcome="expired", tool=tool) == 1
    assert value("msev15_approval_decision_seconds_count", tool=tool) == 2  # decisions made by a person


async def test_a_decided_step_whose_continuation_was_lost_is_continued_by_the_sweep(service, llm: ScriptedLLM) -> None:
    client = await _service(service, llm)
    order_id = await _order(client)
    await _pause(client, llm, order_id)
    # The decision is recorded but its continuation never ran (cut while queued at a shutdown, or
    # its instance died): only the store knows.
    assert await client.app[PENDING].decide(T, "s1", "c-upd", {"approve": True, "decided_at": time.time()}) == 0
    waiting = client.app[RUNNER].waiting
    assert await waiting.recover(now=time.time()) == []  # not stalled yet: a continuation may be queued
    llm.push(Reply("Your order is cancelled."))
    [turn_id] = await waiting.recover(now=time.time() + 61)
    events = await _events(client, turn_id)
    assert events[0]["call_id"] == "c-upd" and events[-1]["type"] == "done"
    assert await _status(client, order_id) == "cancelled"
    assert llm.rejected == []
    assert await waiting.recover(now=time.time() + 61) == []  # taken: nothing left to continue
