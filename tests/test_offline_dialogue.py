"""The offline assistant as a newcomer meets it: common phrasings of every capability, and
conversations that fill a request over several turns (a bare "CUST-1001" or email address is
the answer to the question asked), all through the real service with the reference complaints
and escalation MCP servers on loopback.

Each table row is one session. A row's expectation is the tool called with a subset of its
arguments, or, when no tool should be called, a fragment of the answer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from msev15.agent.context import MCP, REGISTRY
from msev15.agent.tools.registry import Tool, ToolContext
from msev15.escalation.server import EscalationServer
from msev15.mcpkit import capabilities as caps
from tests.complaints.server import running_complaints_server
from tests.conftest import make_settings, sse_events
from tests.escalation.conftest import make_settings as escalation_settings

ORDER = "ORD-1A2B3C4D"


@dataclass(frozen=True)
class Expect:
    tool: str | None = None  # the tool called, None: no tool call
    args: dict[str, Any] = field(default_factory=dict)  # a subset of its arguments
    says: str = ""  # a fragment of the answer (checked when no tool is called)


def asks(fragment: str) -> Expect:
    return Expect(None, {}, fragment)


PHRASINGS: list[tuple[str, Expect]] = [
    # order status
    (f"Where is my order {ORDER}?", Expect("get_order_by_id", {"order_id": ORDER})),
    (f"track {ORDER}", Expect("get_order_by_id", {"order_id": ORDER})),
    (f"status of order {ORDER.lower()} please", Expect("get_order_by_id", {"order_id": ORDER})),
    (ORDER, Expect("get_order_by_id", {"order_id": ORDER})),
    ("Has my parcel shipped yet?", asks("order number")),
    ("When will my order arrive?", asks("order number")),
    # listing
    ("List the last 3 orders", Expect("get_all_orders", {"limit": 3})),
    ("show all orders", Expect("get_all_orders")),
    ("Show my recent orders", Expect("get_all_orders")),
    ("what are the latest orders?", Expect("get_all_orders")),
    ("Show the orders of customer CUST-001", Expect("get_orders_by_customer", {"customer_id": "CUST-001"})),
    ("show my orders", asks("Please tell me the customer id.")),
    ("what did I order? my customer id is CUST-001", Expect("get_orders_by_customer", {"customer_id": "CUST-001"})),
    ("Find orders with SKU WIDGET-9", Expect("search_orders", {"sku": "WIDGET-9"})),
    ("which orders are shipped?", Expect("search_orders", {"status": "shipped"})),
    # creating
    ("Please create an order for customer CUST-001: 2 x SKU WIDGET-9 at 19.99, ship to 1 Main St",
     Expect("create_order", {"customer_id": "CUST-001", "product_sku": "WIDGET-9", "quantity": 2, "price": 19.99,
                             "shipping_address": "1 Main St"})),
    ("I'd like to order 2 units of SKU LAPTOP-1", asks("customer id, price and shipping address")),
    ("I want to buy a widget", asks("I can help with creating an order")),
    ("place a new order", asks("I can help with creating an order")),
    # cancelling and changing
    (f"Can I cancel order {ORDER}?", Expect("update_order_status", {"order_id": ORDER, "status": "cancelled"})),
    ("please cancel my order", asks("Please tell me the order id.")),
    (f"Mark order {ORDER} as shipped", Expect("update_order_status", {"order_id": ORDER, "status": "shipped"})),
    (f"change my order {ORDER} to confirmed", Expect("update_order_status", {"status": "confirmed"})),
    ("I need to update my order", asks("order id and new status")),
    # complaints
    ("I want to file a complaint about order ORD-1001: it arrived damaged", asks("Please tell me the customer id.")),
    ("I want to register a complaint for customer CUST-001 about order ORD-1A2B3C4D: the parcel arrived damaged",
     Expect("register_complaint", {"customer_id": "CUST-001", "order_id": ORDER, "category": "product",
                                   "description": "the parcel arrived damaged"})),
    ("refund for my laptop", asks("I can help with registering a complaint")),
    ("My package never arrived, customer CUST-001", Expect("register_complaint", {"category": "delivery"})),
    ("The blender I got is broken. Customer CUST-001", Expect("register_complaint", {"category": "product"})),
    ("I want to complain", asks("customer id and description of the problem")),
    ("I was overcharged and want my money back, customer CUST-001", Expect("register_complaint",
                                                                           {"category": "billing"})),
    # following a complaint up
    ("What's the status of complaint CMP-1A2B3C4D?", Expect("get_complaint", {"complaint_id": "CMP-1A2B3C4D"})),
    ("any news on my complaint? customer CUST-001", Expect("search_complaints", {"customer_id": "CUST-001"})),
    ("I'd like to follow up on my complaint", asks("I can help with finding complaints")),
    ("please resolve complaint CMP-1A2B3C4D, resolution: replacement sent",
     Expect("resolve_complaint", {"complaint_id": "CMP-1A2B3C4D", "resolution": "replacement sent"})),
    # email
    ("Send an email to jane@example.com with subject Hi saying hello", Expect("send_email", {
        "to": "jane@example.com", "subject": "Hi", "body": "hello"})),
    ("email bob@example.org saying your order shipped", Expect("send_email", {"to": "bob@example.org"})),
    ("please send me a copy of this by email", asks("I can help with emailing a copy")),
    ("test the mail connection", Expect("test_connection")),
    ("can you check the smtp connection", Expect("test_connection")),
    # escalation and a person
    ("please escalate this to a human, my email is jane@example.com", asks("Please tell me the customer id.")),
    ("I want to talk to a person", asks("customer id and email address")),
    ("Can I speak with a real agent? I'm CUST-001, jane@example.com",
     Expect("sendemail", {"customer_id": "CUST-001", "customer_email": "jane@example.com",
                          "reason": "Customer asked to talk to a person"})),
    ("open a support ticket for customer CUST-001, email jane@example.com",
     Expect("sendemail", {"customer_id": "CUST-001", "reason": "Customer asked for escalation"})),
    ("get me a manager", asks("I can help with opening a support ticket")),
    # small talk and the unknown
    ("Hi there", asks("How can I help you today?")),
    ("thanks!", asks("You're welcome")),
    ("what can you do?", asks("register, find and resolve complaints")),
    ("tell me a poem about the sea", asks('For example: "where is my order ORD-1234ABCD?" or "I want to complain')),
]

# Each conversation: (message, expectation) per turn, in one session.
DIALOGUES: dict[str, list[tuple[str, Expect]]] = {
    "complaint, then the customer id": [
        ("I want to file a complaint about order ORD-1001: it arrived damaged", asks("customer id")),
        ("CUST-1001", Expect("register_complaint", {"customer_id": "CUST-1001", "order_id": "ORD-1001",
                                                    "category": "product", "description": "it arrived damaged"})),
    ],
    "escalation, then the customer id": [
        ("please escalate this to a human, my email is jane@example.com", asks("customer id")),
        ("CUST-1001", Expect("sendemail", {"customer_id": "CUST-1001", "customer_email": "jane@example.com",
                                           "query": "please escalate this to a human, my email is jane@example.com"})),
    ],
    "refund, then the customer id": [
        ("refund for my laptop", asks("customer id")),
        ("cust-1001", Expect("register_complaint", {"customer_id": "CUST-1001", "category": "billing",
                                                    "description": "refund for my laptop"})),
    ],
    "order question, then an order id": [
        ("Can you check on my order?", asks("order number")),
        (ORDER, Expect("get_order_by_id", {"order_id": ORDER})),
    ],
    "order question, then a customer id": [
        ("Can you check on my order?", asks("order number")),
        ("CUST-7", Expect("get_orders_by_customer", {"customer_id": "CUST-7"})),
    ],
    "cancel, then the order id": [
        ("please cancel my order", asks("order id")),
        (ORDER.lower(), Expect("update_order_status", {"order_id": ORDER, "status": "cancelled"})),
    ],
    "my orders, then the customer id": [
        ("show my orders", asks("customer id")),
        ("my customer id is CUST-001", Expect("get_orders_by_customer", {"customer_id": "CUST-001"})),
    ],
    "a person, then id and email in one answer": [
        ("I want to talk to a person", asks("customer id and email address")),
        ("CUST-1001, jane@example.com", Expect("sendemail", {"customer_id": "CUST-1001",
                                                             "customer_email": "jane@example.com"})),
    ],
    "a person, then the id, then the email": [
        ("I want to talk to a person", asks("customer id and email address")),
        ("CUST-1001", asks("Please tell me the email address.")),
        ("jane@example.com", Expect("sendemail", {"customer_id": "CUST-1001", "customer_email": "jane@example.com"})),
    ],
    "complaint without a description, then the description": [
        ("I want to complain about order ORD-1A2B3C4D, customer CUST-1001", asks("description of the problem")),
        ("the screen is cracked", Expect("register_complaint", {"customer_id": "CUST-1001", "order_id": ORDER,
                                                                 "description": "the screen is cracked"})),
    ],
    "email without a body, then the body": [
        ("send an email to jane@example.com", asks("text of the message")),
        ("Your order has shipped.", Expect("send_email", {"to": "jane@example.com",
                                                          "body": "Your order has shipped."})),
    ],
    "create order, then the rest of the details": [
        ("I'd like to create an order for customer CUST-001", asks("product SKU")),
        ("2 x SKU WIDGET-9 at 19.99, ship to 1 Main St", Expect("create_order", {
            "customer_id": "CUST-001", "product_sku": "WIDGET-9", "quantity": 2, "price": 19.99,
            "shipping_address": "1 Main St"})),
    ],
    "follow-up on a complaint, then the customer id": [
        ("what's the status of my complaint", asks("customer id")),
        ("CUST-001", Expect("search_complaints", {"customer_id": "CUST-001"})),
    ],
    "a new request in the middle of another": [
        ("I want to complain", asks("customer id")),
        (f"where is order {ORDER}?", Expect("get_order_by_id", {"order_id": ORDER})),
    ],
    "never mind drops the pending request": [
        ("please cancel my order", asks("order id")),
        ("never mind", asks("let's leave that")),
        ("CUST-7", Expect("get_orders_by_customer", {"customer_id": "CUST-7"})),
    ],
    "an answer, then a copy of it by email": [
        (f"where is order {ORDER}?", Expect("get_order_by_id", {"order_id": ORDER})),
        ("email me a copy at jane@example.com", Expect("send_email", {
            "to": "jane@example.com", "subject": "A copy of our conversation",
            "body": f"I couldn't complete that: no order {ORDER} found"})),
    ],
}


@pytest.fixture
async def client(service, tmp_path: Path) -> AsyncIterator[Any]:
    """The service with the reference complaints and escalation servers (mail to an outbox), and
    without the live handoff (HANDOFF_ENABLED=false): "talk to a person" opens a ticket, the
    fallback these phrasings pin down (the handoff itself: tests/test_handoff.py)."""
    async with running_complaints_server(tmp_path / "complaints.db") as complaints, \
            EscalationServer(escalation_settings(tmp_path / "esc"), host="127.0.0.1", port=0) as escalation:
        client = await service(mcp_server_url=complaints.url, escalation_mcp_url=escalation.url,
                               handoff_enabled=False)
        for name in ("complaints", "escalation"):
            assert await client.app[MCP][name].wait_connected(10)
        yield client


async def _turn(client: Any, session: str, message: str) -> list[dict[str, Any]]:
    resp = await client.post("/api/v1/chat/stream", json={"session_id": session, "message": message})
    assert resp.status == 200, await resp.text()
    return sse_events(await resp.text())


def _mismatch(events: list[dict[str, Any]], expect: Expect) -> str | None:
    """Why ``events`` do not meet ``expect``, or None when they do."""
    calls = [(e["name"], e["arguments"]) for e in events if e["type"] == "tool_call"]
    text = "".join(e["content"] for e in events if e["type"] == "token")
    if events[-1]["type"] != "done":
        return f"the turn did not end with done: {events[-1]}"
    if expect.tool is None:
        if calls:
            return f"expected no tool call, got {calls}"
        return None if expect.says in text else f"expected {expect.says!r} in {text!r}"
    if len(calls) != 1 or calls[0][0] != expect.tool:
        return f"expected one call of {expect.tool}, got {calls} (answer {text!r})"
    wrong = {k: calls[0][1].get(k) for k, v in expect.args.items() if calls[0][1].get(k) != v}
    return f"arguments differ: expected {expect.args}, got {calls[0][1]}" if wrong else None


async def test_common_phrasings_of_every_capability(client) -> None:
    assert len(PHRASINGS) >= 40
    failures = []
    for number, (message, expect) in enumerate(PHRASINGS):
        problem = _mismatch(await _turn(client, f"phrasing-{number}", message), expect)
        if problem:
            failures.append(f"{message!r}: {problem}")
    assert not failures, "\n".join(failures)


async def test_slot_filling_dialogues(client) -> None:
    assert len(DIALOGUES) >= 10
    failures = []
    for name, turns in DIALOGUES.items():
        for step, (message, expect) in enumerate(turns):
            problem = _mismatch(await _turn(client, f"dialogue-{list(DIALOGUES).index(name)}", message), expect)
            if problem:
                failures.append(f"{name}, turn {step + 1} {message!r}: {problem}")
                break
    assert not failures, "\n".join(failures)


async def test_a_dialogue_continues_on_another_instance(service, tmp_path: Path) -> None:
    """The pending request is read from the stored history, not kept in the process: a second
    instance over the same SQLite session store takes the answer."""
    settings = make_settings(tmp_path, session_store="sqlite", session_db_path=str(tmp_path / "sessions.db"))
    first, second = await service(settings), await service(settings)
    assert _mismatch(await _turn(first, "moved", "please cancel my order"), asks("order id")) is None
    assert _mismatch(await _turn(second, "moved", ORDER), Expect("update_order_status", {
        "order_id": ORDER, "status": "cancelled"})) is None


async def test_tools_are_found_by_capability_not_by_name(client) -> None:
    """The registry carries each tool's tag: the local ones from their entries, the reference
    servers' from the tools' own ``_meta``; a tool without one is not the assistant's to use."""
    tags = client.app[REGISTRY].capabilities()
    assert tags["get_order_by_id"] == caps.ORDER_LOOKUP and tags["send_email"] == caps.EMAIL_SEND
    assert tags["register_complaint"] == caps.COMPLAINT_REGISTER and tags["sendemail"] == caps.TICKET_ESCALATE
    assert "get_email_status" not in tags and "archive_complaint" not in tags
    assert caps.capability_of("renamed", {caps.CAPABILITY_META_KEY: caps.COMPLAINT_GET}) == caps.COMPLAINT_GET
    assert caps.capability_of("get_complaint", None) == caps.COMPLAINT_GET  # a spec server that does not tag
    assert caps.capability_of("something_else", {}) is None


async def test_talk_to_a_person_uses_a_handoff_tool_when_one_exists(service) -> None:
    """The hook for the live handoff a later issue adds: any tool tagged with the handoff
    capability is used for "talk to a person", whatever its name, before a ticket (the built-in
    one is switched off, so this one is the only one)."""
    client = await service(handoff_enabled=False)
    taken: list[dict[str, Any]] = []

    async def hand_over(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
        taken.append(args)
        return {"status": "waiting_for_human"}

    schema = {"type": "object", "properties": {"reason": {"type": "string"}, "summary": {"type": "string"}},
              "required": ["reason"]}
    client.app[REGISTRY].add(Tool("ask_a_colleague", "Hand the conversation to a person.", schema, hand_over,
                                       capability=caps.CONVERSATION_HANDOFF))
    events = await _turn(client, "handoff", "I'd like to talk to a person please")
    assert _mismatch(events, Expect("ask_a_colleague", {"reason": "Customer asked to talk to a person"})) is None
    assert taken == [{"reason": "Customer asked to talk to a person",
                      "summary": "I'd like to talk to a person please"}]


async def test_without_a_ticket_service_talk_to_a_person_says_what_it_can_do(service) -> None:
    client = await service(handoff_enabled=False)
    events = await _turn(client, "no-person", "I want to speak to a human")
    assert _mismatch(events, asks("I can't connect you with a person from here")) is None
    assert _mismatch(events, asks('For example: "where is my order ORD-1234ABCD?"')) is None
