"""The tools the offline assistant can use this turn, found by what they do.

A tool is usable when it carries a capability tag (:mod:`msev15.mcpkit.capabilities`) and is in
the turn's tool list; its arguments are fitted to its own schema, so a server's tool with fewer
or other fields still works. :data:`SKILLS` is how the assistant describes itself: only what the
tools it has right now can do, with an example request for each.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from msev15.mcpkit import capabilities as caps

# (capability, what the assistant says it can do, an example request), in the order it says them.
SKILLS = (
    (caps.ORDER_LOOKUP, "look up orders (by order id, by customer, or by SKU, address or status)",
     "where is my order ORD-1234ABCD?"),
    (caps.COMPLAINT_REGISTER, "register, find and resolve complaints",
     "I want to complain about order ORD-1234ABCD: it arrived damaged"),
    (caps.TICKET_ESCALATE, "open a support ticket when I can't help", "I'd like to talk to a person"),
    (caps.ORDER_CREATE, "create orders",
     "create an order for customer CUST-1001: 2 x SKU WIDGET-1 at 19.99, ship to 1 Main St"),
    (caps.ORDER_SET_STATUS, "change or cancel an order", "please cancel order ORD-1234ABCD"),
    (caps.ORDER_LIST, "list recent orders", "show the last 5 orders"),
    (caps.EMAIL_SEND, "send emails", "send an email to jane@example.com saying your order has shipped"),
    (caps.EMAIL_CHECK, "check the mail connection", "test the mail connection"),
)

# How a missing argument is asked for; what a question names is how its answer is read back.
FIELD_NAMES = {
    "to": "recipient's email address", "body": "text of the message", "subject": "subject",
    "customer_id": "customer id", "product_sku": "product SKU", "quantity": "quantity", "price": "price",
    "shipping_address": "shipping address", "order_id": "order id", "complaint_id": "complaint id",
    "customer_email": "email address", "description": "description of the problem",
    "resolution": "resolution", "status": "new status (confirmed, shipped, delivered or cancelled)",
}


class Toolbox:
    """The turn's tool schemas (``{name: function}``) and the capability tags of their tools."""

    def __init__(self, functions: Mapping[str, Mapping[str, Any]], tags: Mapping[str, str]) -> None:
        self._functions = functions
        self._by_capability: dict[str, list[str]] = {}
        self._capability_of: dict[str, str] = {}
        for name in functions:
            tag = tags.get(name)
            if tag:
                self._by_capability.setdefault(tag, []).append(name)
                self._capability_of[name] = tag

    def find(self, capability: str, args: Mapping[str, Any] | None = None) -> str | None:
        """The tool for ``capability``: the first that needs nothing beyond ``args`` (so a plain
        "send" does not go to a sender that requires attachments), else the first."""
        names = self._by_capability.get(capability) or []
        if args:
            given = {k for k, v in args.items() if v not in (None, "")}
            for name in names:
                if set(self.schema(name)[1]) <= given:
                    return name
        return names[0] if names else None

    def has(self, capability: str) -> bool:
        return capability in self._by_capability

    def capability(self, name: str) -> str | None:
        return self._capability_of.get(name)

    def schema(self, name: str) -> tuple[dict[str, Any], list[str]]:
        params = self._functions[name].get("parameters") or {}
        return dict(params.get("properties") or {}), list(params.get("required") or [])

    def fit(self, name: str, args: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """Keep the args the schema knows; report the required ones still missing."""
        props, required = self.schema(name)
        fitted = {k: v for k, v in args.items() if v not in (None, "") and (not props or k in props)}
        return fitted, [r for r in required if r not in fitted]

    def skills(self) -> list[tuple[str, str]]:
        """(what, example) for each thing the assistant can do with these tools."""
        return [(what, example) for capability, what, example in SKILLS if self.has(capability)]


def listing(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def what_i_can_do(box: Toolbox) -> str:
    """What the assistant can do with the tools it has right now (never more)."""
    skills = box.skills()
    if not skills:
        return "I'm CustomerServiceAgent. Right now I can only chat: none of my tools are available."
    return f"I'm CustomerServiceAgent. I can {listing([what for what, _ in skills])}."


def two_examples(box: Toolbox) -> str:
    examples = [f'"{example}"' for _, example in box.skills()[:2]]
    return f" For example: {' or '.join(examples)}." if examples else ""
