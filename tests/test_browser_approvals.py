"""Approval cards in the playground (issue 23, rule 10), in headless Chromium: a card with the
tool, its arguments and Approve / Reject appears when a call waits, comes back after a reload
(the page reads the pending calls), and a decision continues the answer on the page."""

from __future__ import annotations

from typing import Any

from playwright.async_api import expect

from msev15.store.context import ORDERS
from tests.llm_server import Call, Reply, ScriptedLLM
from tests.test_browser import _open, _send, browser  # the browser fixture, shared

__all__ = ["browser"]


async def test_an_approval_card_survives_a_reload_and_approving_continues(browser: Any, service: Any,
                                                                          llm: ScriptedLLM) -> None:
    client = await service(llm_provider="openai", openai_base_url=f"{llm.url}/v1", openai_api_key="k",
                           tool_approval=("update_order_status",))
    order_id = str((await client.app[ORDERS].create("default", "CUST-1", "SKU-1", 1, 10,
                                                    "1 Main St, Springfield"))["order_id"])
    llm.push(Reply("I can cancel it.", tool_calls=[
        Call("update_order_status", {"order_id": order_id, "status": "cancelled"}, "c-upd")]),
        Reply("Your order is now cancelled."))
    context, page = await _open(browser, str(client.make_url("/")))
    await _send(page, "web-approval", f"Cancel order {order_id}")
    card = page.locator("#log .approval[data-call-id='c-upd']")
    await expect(card).to_contain_text("Approve update_order_status?")
    await expect(card).to_contain_text(order_id)
    await page.locator("#status", has_text="Waiting for your decision.").wait_for()
    assert (await client.app[ORDERS].get("default", order_id))["status"] == "pending"

    await page.reload()  # the card comes back from GET .../pending
    card = page.locator("#log .approval[data-call-id='c-upd']")
    await card.get_by_role("button", name="Approve").click()
    await expect(card.locator(".outcome")).to_have_text("Approved.")
    await expect(page.locator("#log li.assistant").last).to_contain_text("Your order is now cancelled.")
    assert (await client.app[ORDERS].get("default", order_id))["status"] == "cancelled"
    await context.close()


async def test_rejecting_with_a_reason_tells_the_agent(browser: Any, service: Any,
                                                       llm: ScriptedLLM) -> None:
    client = await service(llm_provider="openai", openai_base_url=f"{llm.url}/v1", openai_api_key="k",
                           tool_approval=("update_order_status",))
    order_id = str((await client.app[ORDERS].create("default", "CUST-1", "SKU-1", 1, 10,
                                                    "1 Main St, Springfield"))["order_id"])
    llm.push(Reply("", tool_calls=[Call("update_order_status", {"order_id": order_id, "status": "cancelled"},
                                        "c-upd")]), Reply("All right, I kept it."))
    context, page = await _open(browser, str(client.make_url("/")))
    await _send(page, "web-reject", f"Cancel order {order_id}")
    card = page.locator("#log .approval[data-call-id='c-upd']")
    await card.get_by_label("Reason for update_order_status").fill("The customer changed their mind")
    await card.get_by_role("button", name="Reject").click()
    await expect(card.locator(".outcome")).to_have_text("Rejected.")
    await expect(page.locator("#log li.assistant").last).to_contain_text("All right, I kept it.")
    assert "The customer changed their mind" in str(llm.requests[-1])
    assert (await client.app[ORDERS].get("default", order_id))["status"] == "pending"
    await context.close()


async def test_a_client_tool_call_is_shown_and_its_output_sent_from_the_page(browser: Any, service: Any,
                                                                             llm: ScriptedLLM) -> None:
    client = await service(llm_provider="openai", openai_base_url=f"{llm.url}/v1", openai_api_key="k")
    tool = {"name": "get_location", "description": "The user's city", "parameters": {"type": "object"}}
    llm.push(Reply("", tool_calls=[Call("get_location", {"precision": "city"}, "c-loc")]),
             Reply("You are in Porto."))
    paused = await client.post("/api/v1/chat", json={"session_id": "web-client-tool", "message": "Where am I?",
                                                     "tools": [tool]})
    assert (await paused.json())["status"] == "waiting"
    context, page = await _open(browser, str(client.make_url("/")))
    await page.fill("#session", "web-client-tool")
    await page.press("#session", "Tab")  # the field's own change event: the page switches to that session
    card = page.locator("#log .approval[data-call-id='c-loc']")
    await expect(card).to_contain_text("Waiting for your tool get_location")
    await expect(card).to_contain_text('"precision":"city"')
    await card.get_by_label("Output of get_location").fill('{"city": "Porto"}')
    await card.get_by_role("button", name="Send output").click()
    await expect(card.locator(".outcome")).to_have_text("Output sent.")
    await expect(page.locator("#log li.assistant").last).to_contain_text("You are in Porto.")
    assert "Porto" in str(llm.requests[-1]) and llm.rejected == []
    await context.close()
