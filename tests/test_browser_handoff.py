"""A customer in the playground and an operator in the console, in two browser contexts (headless
Chromium, AUTH_MODE=api_key): the assistant hands off, the operator claims, they exchange
messages live (the session stream), and the assistant takes back over after the release."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from playwright.async_api import expect

from msev15.store.apikeys import SqliteApiKeyStore
from msev15.store.context import ORDERS
from tests.llm_server import Call, Reply, ScriptedLLM
from tests.test_browser import _open, _send, browser  # noqa: F401  (browser: the Chromium fixture)


async def _keys(db: Path) -> tuple[str, str]:
    store = SqliteApiKeyStore(db)
    try:
        return (await store.create("acme", "web", "customer"))[1], (await store.create("acme", "Alice", "operator"))[1]
    finally:
        await store.close()


async def test_a_customer_and_an_operator_talk_and_the_agent_takes_back(browser: Any, service: Any,  # noqa: F811
                                                                        tmp_path: Path) -> None:
    keys_db = tmp_path / "keys.db"
    customer_key, operator_key = await _keys(keys_db)
    client = await service(auth_mode="api_key", api_keys_db_path=str(keys_db), order_db_seed=True)
    url = str(client.make_url("/"))

    customer_context, customer = await _open(browser, url)
    await customer.fill("#apikey", customer_key)
    await customer.dispatch_event("#apikey", "change")
    await _send(customer, "web-help", "I want to talk to a person")
    await customer.locator("#status", has_text="Waiting for a person").wait_for()

    operator_context, operator = await _open(browser, str(client.make_url("/console")))
    await operator.fill("#apikey", operator_key)
    await operator.click("#sign-in")
    await operator.locator("#queue li", has_text="web-help").locator(".waited").wait_for()
    await operator.click("#queue button[data-session='web-help']")
    await expect(operator.locator("#conversation-title")).to_have_text("Conversation web-help")
    await operator.locator("#log li.customer", has_text="I want to talk to a person").wait_for()

    await operator.fill("#message", "Hi, Alice here. How can I help?")
    await operator.click("#send")
    reply = customer.locator("#log li.human", has_text="Alice here")
    await reply.wait_for()
    await expect(reply.locator(".role")).to_have_text("Alice (support team)")
    await customer.locator("#status", has_text="A person from the support team is answering").wait_for()

    await _send(customer, "web-help", "Where is my order ORD-1?")
    await operator.locator("#log li.customer", has_text="Where is my order ORD-1?").wait_for()
    await operator.fill("#note", "The customer asks about ORD-1.")
    await operator.click("#release")
    await operator.locator("#status", has_text="Handed back").wait_for()
    await customer.locator("#log li.human", has_text="The customer asks about ORD-1.").wait_for()

    await _send(customer, "web-help", "Show my recent orders")
    answer = customer.locator("#log li.assistant:not(.human)").last
    await expect(answer).not_to_have_text("")
    await operator.locator("#log li.assistant:not(.human)").last.wait_for()  # the console follows the agent too
    history = await (await client.get("/api/v1/sessions/web-help/history",
                                      headers={"X-API-Key": customer_key})).json()
    assert history["mode"] == "agent"
    assert [m["author"]["name"] for m in history["messages"] if "author" in m] == ["Alice", "Alice"]
    await customer_context.close()
    await operator_context.close()


async def test_an_operator_approves_a_pending_call_in_the_console_and_the_turn_continues(
        browser: Any, service: Any, llm: ScriptedLLM, tmp_path: Path) -> None:  # noqa: F811
    """APPROVAL_BY=operator: the customer may not decide the cancellation; the operator takes the
    session over in the console, sees the waiting call, approves it, and the answer goes on there."""
    keys_db = tmp_path / "keys.db"
    customer_key, operator_key = await _keys(keys_db)
    client = await service(auth_mode="api_key", api_keys_db_path=str(keys_db), llm_provider="openai",
                           openai_base_url=f"{llm.url}/v1", openai_api_key="k", llm_max_retries=0,
                           tool_approval=("update_order_status",), approval_by="operator")
    order_id = str((await client.app[ORDERS].create("acme", "CUST-1", "SKU-1", 1, 10,
                                                    "1 Main St, Springfield"))["order_id"])
    llm.push(Reply("Hello, how can I help?"), Reply("I can cancel it.", tool_calls=[
        Call("update_order_status", {"order_id": order_id, "status": "cancelled"}, "c-upd")]),
        Reply("Your order is now cancelled."))
    customer = {"X-API-Key": customer_key}
    hello = await client.post("/api/v1/chat", json={"session_id": "web-cancel", "message": "Hi"}, headers=customer)
    assert hello.status == 200
    waiting = await client.post("/api/v1/chat", json={"session_id": "web-cancel", "message": f"Cancel {order_id}"},
                                headers=customer)
    assert (await waiting.json())["status"] == "waiting"
    refused = await client.post("/api/v1/sessions/web-cancel/pending/c-upd", json={"approve": True}, headers=customer)
    assert refused.status == 403 and (await refused.json())["error"] == "forbidden"

    context, operator = await _open(browser, str(client.make_url("/console")))
    await operator.fill("#apikey", operator_key)
    await operator.click("#sign-in")
    await operator.fill("#takeover-session", "web-cancel")
    await operator.click("#takeover-claim")
    await expect(operator.locator("#conversation-title")).to_have_text("Conversation web-cancel")
    card = operator.locator("#log .approval[data-call-id='c-upd']")
    await expect(card).to_contain_text("Approve update_order_status?")
    await expect(card).to_contain_text(order_id)
    assert (await client.app[ORDERS].get("acme", order_id))["status"] == "pending"

    await card.get_by_role("button", name="Approve").click()
    await expect(card.locator(".outcome")).to_have_text("Approved.")
    await operator.locator("#log li.note", has_text="update_order_status: done").wait_for()
    await expect(operator.locator("#log li.assistant:not(.human)").last).to_contain_text(
        "Your order is now cancelled.")
    assert (await client.app[ORDERS].get("acme", order_id))["status"] == "cancelled"
    await context.close()
