"""The offline assistant exercises approvals (issue 23, "done when"): with
TOOL_APPROVAL=update_order_status, asking it to cancel an order pauses the turn on an approval,
and approving it cancels the order and the assistant reports it."""

from __future__ import annotations

from msev15.store.context import ORDERS
from tests.conftest import sse_events


async def test_cancelling_an_order_waits_for_approval_with_the_offline_assistant(service) -> None:
    client = await service(tool_approval=("update_order_status",))
    orders = client.app[ORDERS]
    order_id = str((await orders.create("default", "CUST-1001", "USB-C-HUB-7IN1", 1, 49.99,
                                        "12 Baker Street, London"))["order_id"])
    resp = await client.post("/api/v1/chat", json={"session_id": "s", "message": f"Please cancel order {order_id}"})
    body = await resp.json()
    assert body["status"] == "waiting", body
    [call] = body["pending"]
    assert call["kind"] == "approval" and call["name"] == "update_order_status"
    assert call["arguments"] == {"order_id": order_id, "status": "cancelled"}
    assert (await orders.get("default", order_id))["status"] == "pending"
    decided = await (await client.post(f"/api/v1/sessions/s/pending/{call['call_id']}",
                                       json={"approve": True})).json()
    events = sse_events(await (await client.get(f"/api/v1/sessions/s/turns/{decided['turn_id']}/events")).text())
    assert events[-1]["type"] == "done"
    answer = "".join(e.get("content", "") for e in events if e["type"] == "token")
    assert order_id in answer and "cancelled" in answer
    assert (await orders.get("default", order_id))["status"] == "cancelled"
