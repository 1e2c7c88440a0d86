"""Admission scenarios shared by the stores whose admission reads the session's state in one
step (tests/test_redis_admission.py: the Redis admit script; tests/test_pg_admission.py: the
PostgreSQL look). Each takes a client of the service on that store and the scripted model, and
asserts what the step must keep of the look-ups it replaces."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from aiohttp.test_utils import TestClient

from msev15.store.base import SESSIONS
from msev15.store.context import ORDERS
from msev15.store.pending import PENDING
from tests.conftest import chat_ok
from tests.llm_server import Call, Reply, ScriptedLLM

ANSWER = "Hello from the scripted model."


async def hold_is_per_tenant_and_per_live_session(client: TestClient, llm: ScriptedLLM,
                                                  idle: Callable[[str, str], Awaitable[None]]) -> None:
    """A person holds one tenant's session: another tenant's session of the same id is the
    agent's; once ``idle(tenant, session)`` has put the held session past its TTL (in the store's
    own terms), it has no mode and holds nothing back. The client's TTL must be set."""
    sessions = client.app[SESSIONS]
    await chat_ok(client, "s1", "Hi", tenant_id="acme")
    assert await sessions.set_mode("acme", "s1", "waiting_for_human")

    assert (await chat_ok(client, "s1", "Hi", tenant_id="globex"))["message"] == ANSWER
    assert (await chat_ok(client, "s1", "Hello?", tenant_id="acme"))["status"] == "with_human"
    assert len(llm.requests) == 2

    await idle("acme", "s1")
    assert await sessions.mode("acme", "s1") is None
    assert (await chat_ok(client, "s1", "Back again", tenant_id="acme"))["message"] == ANSWER
    assert len(llm.requests) == 3


async def approval_call(client: TestClient) -> tuple[Call, str]:
    """An order of tenant t1 and the model's call to cancel it, with the order's id (the client's
    TOOL_APPROVAL must name update_order_status, so the call waits for a decision)."""
    order = await client.app[ORDERS].create("t1", "CUST-1", "SKU-1", 1, 10, "1 Main Street, Springfield")
    return Call("update_order_status", {"order_id": order["order_id"], "status": "cancelled"}, "c-upd"), \
        str(order["order_id"])


async def new_message_settles_a_paused_step_first(client: TestClient, llm: ScriptedLLM) -> None:
    cancel, order_id = await approval_call(client)
    llm.push(Reply("", tool_calls=[cancel]), Reply("Fine, I will leave it."))
    assert (await chat_ok(client, "s1", "Cancel it", tenant_id="t1"))["status"] == "waiting"
    assert await client.app[PENDING].get("t1", "s1") is not None

    # The session has a paused step: its next message's turn must settle it before the model.
    body = await chat_ok(client, "s1", "Actually, keep it", tenant_id="t1")
    assert body["message"] == "Fine, I will leave it."
    assert "superseded" in json.dumps(llm.requests[-1]) and llm.rejected == []
    assert await client.app[PENDING].get("t1", "s1") is None
    assert (await client.app[ORDERS].get("t1", order_id))["status"] == "pending"

    # And with no paused step left, the next turn runs as any other.
    assert (await chat_ok(client, "s1", "Thanks", tenant_id="t1"))["message"] == ANSWER
