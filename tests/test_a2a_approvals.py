"""A task that waits for a person through A2A (issues 23 and 28): the turn pauses on a call that
needs approval, the task reads INPUT_REQUIRED with the pending calls in a data part, and a message
naming the task with ``{"decisions": [...]}`` decides them; the last decision runs the
continuation. The real a2a-sdk client, the scripted model server and the SQLite orders."""

from __future__ import annotations

from typing import Any

from a2a.types import a2a_pb2 as pb
from google.protobuf.json_format import MessageToDict
from google.protobuf.struct_pb2 import Value

from msev15.store.context import ORDERS
from tests import test_a2a
from tests.llm_server import Call, Reply, ScriptedLLM
from tests.test_a2a import base_url, events_of, rpc, send_params, user_message

T = "default"

# The real a2a-sdk clients, opened and closed by test_a2a's fixture.
clients = test_a2a.clients


def _decisions(task_id: str, context_id: str, *decisions: dict[str, Any]) -> pb.SendMessageRequest:
    data = Value()
    data.struct_value.update({"decisions": list(decisions)})
    message = pb.Message(message_id="m-decide", role=pb.ROLE_USER, task_id=task_id, context_id=context_id,
                         parts=[pb.Part(data=data)])
    return pb.SendMessageRequest(message=message)


def _pending(task: pb.Task) -> list[dict[str, Any]]:
    found = []
    for part in task.status.message.parts:
        if part.HasField("data"):
            found += MessageToDict(part.data).get("pending", [])
    return found


async def _waiting_task(service: Any, llm: ScriptedLLM, clients: Any) -> tuple[Any, Any, pb.Task, str]:
    client = await service(llm_provider="openai", openai_base_url=f"{llm.url}/v1", openai_api_key="k",
                           llm_max_retries=0, tool_approval=("update_order_status",))
    order = await client.app[ORDERS].create(T, "CUST-1", "SKU-1", 1, 10, "1 Main Street, Springfield")
    order_id = str(order["order_id"])
    llm.push(Reply("Let me cancel that.", tool_calls=[
        Call("update_order_status", {"order_id": order_id, "status": "cancelled"}, "c-upd")]))
    a2a = await clients(base_url(client), streaming=False)
    [event] = await events_of(a2a, user_message(f"Cancel {order_id}", "ctx-appr"))
    return client, a2a, event.task, order_id


async def test_an_approval_round_trip_through_input_required(service, llm: ScriptedLLM, clients) -> None:
    client, a2a, task, order_id = await _waiting_task(service, llm, clients)
    assert task.status.state == pb.TASK_STATE_INPUT_REQUIRED
    assert [(p["call_id"], p["name"]) for p in _pending(task)] == [("c-upd", "update_order_status")]
    assert str((await client.app[ORDERS].get(T, order_id))["status"]) != "cancelled"  # not run before approval

    llm.push(Reply("Your order is cancelled."))
    [event] = await events_of(a2a, _decisions(task.id, "ctx-appr", {"call_id": "c-upd", "approve": True}))
    done = event.task
    assert done.status.state == pb.TASK_STATE_COMPLETED and done.context_id == "ctx-appr"
    assert "".join(p.text for a in done.artifacts for p in a.parts).endswith("Your order is cancelled.")
    assert str((await client.app[ORDERS].get(T, order_id))["status"]) == "cancelled"  # run once, after it
    tool_results = [m for m in llm.requests[-1]["messages"] if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in tool_results] == ["c-upd"]  # a history the model accepts


async def test_a_rejection_is_told_to_the_model_and_nothing_runs(service, llm: ScriptedLLM, clients) -> None:
    client, a2a, task, order_id = await _waiting_task(service, llm, clients)
    llm.push(Reply("I kept the order."))
    [event] = await events_of(a2a, _decisions(task.id, "ctx-appr",
                                              {"call_id": "c-upd", "approve": False, "reason": "not today"}))
    assert event.task.status.state == pb.TASK_STATE_COMPLETED
    assert str((await client.app[ORDERS].get(T, order_id))["status"]) != "cancelled"
    [result] = [m for m in llm.requests[-1]["messages"] if m["role"] == "tool"]
    assert "not today" in result["content"]


async def test_a_decision_twice_or_for_an_unknown_call_is_invalid_params(service, llm: ScriptedLLM, clients) -> None:
    client, a2a, task, _ = await _waiting_task(service, llm, clients)
    unknown = rpc("SendMessage", send_params({"data": {"decisions": [{"call_id": "nope", "approve": True}]}},
                                             taskId=task.id, contextId="ctx-appr"))
    error = (await (await client.post("/a2a", json=unknown)).json())["error"]
    assert error["code"] == -32602 and error["data"]["error"] == "pending_not_found"
    text = rpc("SendMessage", send_params({"text": "and also?"}, taskId=task.id, contextId="ctx-appr"))
    error = (await (await client.post("/a2a", json=text)).json())["error"]
    assert error["code"] == -32602 and "decisions or outputs" in error["message"]
    llm.push(Reply("Done."))
    await events_of(a2a, _decisions(task.id, "ctx-appr", {"call_id": "c-upd", "approve": True}))
    again = rpc("SendMessage", send_params({"data": {"decisions": [{"call_id": "c-upd", "approve": True}]}},
                                           taskId=task.id, contextId="ctx-appr"))
    error = (await (await client.post("/a2a", json=again)).json())["error"]
    assert error["code"] == -32602 and error["data"]["error"] == "already_decided"  # exactly one decision wins
