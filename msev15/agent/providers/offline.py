"""The offline assistant: a small deterministic model with no network.

It reads the conversation the way a real model would (OpenAI message list plus tool schemas),
asks for tool calls through the same loop, and streams its answers word by word. It understands
the core requests — orders, email, complaints, escalation — and asks for what is missing.
Tool arguments are only sent when the tool's schema has them, so it works with whatever tools
an MCP server offers.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import re
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from msev15.agent.providers.base import ModelReply, ProbeStatus, ToolCallRequest

# Every pattern runs in time linear in the message (a 16,000-character message is allowed, and
# this runs on the event loop). The rules that keep it so: whitespace before a capture is
# possessive (``\s*+``: no splitting one run between several ``\s*``); a match may start only
# where its run starts (lookbehinds), so a long run is not rescanned from every position; no
# ``A.*B`` search (with many A's each scans to the end): ``_after`` looks for B after the first A;
# and free text ("ship to ...", "subject ...") is cut by :class:`_Phrase` in one forward pass
# instead of a lazy ``(.+?)`` tested against the end at every step.
_ORDER_ID = re.compile(r"\b(ORD-[A-Z0-9]{4,})\b", re.I)
_COMPLAINT_ID = re.compile(r"\b(CMP-[A-Z0-9]{4,})\b", re.I)
_CUSTOMER = re.compile(r"\bcustomer(?:\s*+id)?\s*+[:#]?\s*+([A-Za-z0-9][\w-]*\d[\w-]*|[A-Z]{2,}[\w-]*)", re.I)
_BARE_CUSTOMER = re.compile(r"\b(CUST-[A-Z0-9][A-Z0-9-]*)\b", re.I)
_EMAIL = re.compile(r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_SKU = re.compile(r"\bsku\s*+[:#]?\s*+([A-Za-z0-9][\w-]*)", re.I)
_QTY = re.compile(r"\b(\d{1,6})\s*+(?:x\b|×|units?\b|pcs\b|pieces\b|items?\b|of\b)", re.I)
_PRICE = re.compile(r"(?:price|at|for|@)\s*+[:]?\s*+[$€£]?\s*+(\d++(?:\.\d{1,2})?)\b(?!\s*+(?:x|units?|pcs))", re.I)
_STATUSES = ("pending", "confirmed", "shipped", "delivered", "cancelled")
_STATUS = re.compile(r"\b(" + "|".join(_STATUSES) + r"|canceled)\b", re.I)
_LIMIT = re.compile(r"\b(?:last|recent|latest|top|first)\s++(\d{1,3})\b", re.I)
_GREETING = re.compile(r"^\s*+(hi|hello|hey|good (morning|afternoon|evening)|greetings)\b", re.I)
_THANKS = re.compile(r"\b(thanks|thank you|cheers)\b", re.I)


class _Phrase:
    """Free text after a keyword: from the end of the first ``start`` match up to the first
    ``stop`` match after it, else to the end of that line (``to_end``: of the message), with
    whitespace and quotes trimmed. One forward search for each, so linear in the message."""

    def __init__(self, start: str, stop: str | None = None, *, to_end: bool = False) -> None:
        self.start = re.compile(start, re.I)
        self.stop = re.compile(stop, re.I) if stop else None
        self.to_end = to_end

    def search(self, text: str) -> str | None:
        found = self.start.search(text)
        if found is None:
            return None
        begin = found.end()
        end = len(text) if self.to_end else text.find("\n", begin)
        if end < 0:
            end = len(text)
        if self.stop is not None:
            stop = self.stop.search(text, begin + 1, end + 1)
            if stop is not None:
                end = stop.start()
        value = text[begin:end].strip().strip("\"'").strip()
        return value or None


_ADDRESS = _Phrase(r"(?:ship(?:ping)?(?:\s++it)?\s++to|address(?:\s++is)?|deliver(?:ed)?\s++to)\s*+[:]?\s*+",
                   r"\.\s")
_SEARCH_ADDRESS = _Phrase(r"\b(?:address|shipped to|going to)\s++(?:contains\s++|like\s++)?")
_SUBJECT = _Phrase(r"subject\s*+[:=]?\s*+",
                   r"(?<!\s)[\"']?\s++(?:saying|body|with (?:the )?body|and (?:say|tell)|message)\b")
_BODY = _Phrase(r"(?:saying|body\s*+[:=]?|message\s*+[:=]|tell(?:ing)? (?:them|him|her)(?: that)?)\s*+", to_end=True)
_RESOLUTION = _Phrase(r"(?:resolution|resolved with|because|note)\s*+[:=]?\s*+", to_end=True)
_TEST_MAIL = (re.compile(r"\b(?:test|check)\b"), re.compile(r"\b(?:mail|smtp|email)\b"), re.compile(r"\bconnect"))
_CREATE = re.compile(r"\b(?:create|place|make|new)\b")
_CREATE_AFTER = re.compile(r"\b(?:create|place)")
_ORDER_WORD = re.compile(r"\border\b")


def _after(text: str, *patterns: re.Pattern[str]) -> bool:
    """Each pattern matches after the previous one's first match: ``A.*B.*C`` in linear time
    (the first A leaves the most room for the rest, so it is the only one to try)."""
    pos = 0
    for pattern in patterns:
        found = pattern.search(text, pos)
        if found is None:
            return False
        pos = found.end()
    return True


_CATEGORIES = {  # first match wins: "arrived damaged" is about the product, not the delivery
    "product": ("broken", "damaged", "defect", "faulty", "quality", "wrong item"),
    "billing": ("charge", "bill", "refund", "invoice", "payment", "overcharg"),
    "delivery": ("late", "deliver", "shipping", "arriv", "lost", "parcel", "package", "courier"),
    "service": ("rude", "support", "service", "agent", "wait"),
}

# What the assistant can do, each with the tools it needs (any one of them is enough).
_SKILLS = (
    ("look up orders (by order id, by customer, or by SKU, address or status)", ("get_order_by_id",)),
    ("create orders", ("create_order",)),
    ("change an order's status", ("update_order_status",)),
    ("list recent orders", ("get_all_orders",)),
    ("send emails", ("send_email", "send_text_email")),
    ("check the mail connection", ("test_connection",)),
    ("register, find and resolve complaints", ("register_complaint",)),
    ("open a support ticket when I can't help", ("sendemail",)),
)


def capabilities(tools: dict[str, dict[str, Any]]) -> str:
    """What the assistant can do with the tools it has right now (never more)."""
    skills = [skill for skill, needs in _SKILLS if _tool(tools, *needs)]
    if not skills:
        return "I'm CustomerServiceAgent. Right now I can only chat: none of my tools are available."
    listed = skills[0] if len(skills) == 1 else ", ".join(skills[:-1]) + " and " + skills[-1]
    return f"I'm CustomerServiceAgent. I can {listed}."


# How a missing argument is asked for.
_FIELD_NAMES = {
    "to": "recipient's email address", "body": "text of the message", "subject": "subject",
    "customer_id": "customer id", "product_sku": "product SKU", "quantity": "quantity", "price": "price",
    "shipping_address": "shipping address", "order_id": "order id", "complaint_id": "complaint id",
    "customer_email": "email address", "description": "description of the problem",
    "resolution": "resolution",
}


def _words(text: str) -> list[str]:
    """Split into stream tokens that join back to the exact text."""
    return re.findall(r"\S+\s*|\s+", text)


def _tool(tools: dict[str, dict[str, Any]], *names: str) -> str | None:
    """The available tool for one of ``names`` (exact, or an MCP prefix like ``x_name``)."""
    for name in names:
        if name in tools:
            return name
        for available in tools:
            if available.endswith("_" + name):
                return available
    return None


def _props(tools: dict[str, dict[str, Any]], name: str) -> tuple[dict[str, Any], list[str]]:
    params = tools[name].get("parameters") or {}
    return params.get("properties") or {}, list(params.get("required") or [])


def _fit(tools: dict[str, dict[str, Any]], name: str, args: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Keep the args the schema knows; report required ones that are still missing."""
    props, required = _props(tools, name)
    fitted = {k: v for k, v in args.items() if v not in (None, "") and (not props or k in props)}
    return fitted, [r for r in required if r not in fitted]


def _last_assistant(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "assistant" and message.get("content"):
            return str(message["content"])
    return ""


def _last_user(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return str(message.get("content") or "")
    return ""


Tools = dict[str, dict[str, Any]]
Reply = tuple[str, tuple[ToolCallRequest, ...]]


@dataclass(frozen=True, slots=True)
class _Request:
    """What every intent reads from the user's message, parsed once."""

    text: str
    low: str
    previous: str
    order_id: str | None
    complaint_id: str | None
    customer: str | None
    emails: list[str]
    status: str | None

    @classmethod
    def parse(cls, text: str, previous: str) -> _Request:
        low = text.lower()
        status = _m(_STATUS, text, lower=True)
        if status == "canceled" or (status is None and re.search(r"\bcancel\b", low)):
            status = "cancelled"
        return cls(text, low, previous, _m(_ORDER_ID, text, upper=True), _m(_COMPLAINT_ID, text, upper=True),
                   _m(_CUSTOMER, text) or _m(_BARE_CUSTOMER, text, upper=True), _EMAIL.findall(text), status)


class OfflineProvider:
    name = "offline"
    model = "offline assistant"

    def __init__(self, token_delay: float = 0.0) -> None:
        self._delay = token_delay
        self._calls = 0

    async def probe(self) -> ProbeStatus:
        return "offline"

    async def close(self) -> None:
        return None

    async def stream(self, messages: list[dict[str, Any]],
                     tools: list[dict[str, Any]]) -> AsyncIterator[str | ModelReply]:
        by_name = {t["function"]["name"]: t["function"] for t in tools}
        last = messages[-1] if messages else {}
        calls: tuple[ToolCallRequest, ...]
        if last.get("role") == "tool":
            text, calls = self._summarise(messages), ()
        else:
            text, calls = self._decide(_last_user(messages), by_name, _last_assistant(messages))
        # An estimate, as a model's would be: about four characters a token.
        prompt_tokens = sum(len(m.get("content") or "") for m in messages) // 4
        tokens = _words(text)
        for token in tokens:
            # Yield to the loop between tokens, as a network model would, so one long answer
            # never holds up other sessions.
            await asyncio.sleep(self._delay)
            yield token
        yield ModelReply(text, calls, {"prompt_tokens": prompt_tokens, "completion_tokens": len(tokens)})

    # --- deciding what to do with a user message ---------------------------------------------

    def _call(self, name: str, args: dict[str, Any]) -> tuple[str, tuple[ToolCallRequest, ...]]:
        self._calls += 1
        return "", (ToolCallRequest(f"call_offline_{self._calls}", name, json.dumps(args)),)

    def _ask(self, tools: dict[str, dict[str, Any]], name: str | None, args: dict[str, Any],
             what: str,
             missing_hint: Callable[[list[str]], str] | None = None) -> tuple[str, tuple[ToolCallRequest, ...]]:
        if name is None:
            return f"Sorry, {what} is not available right now: that service is not connected.", ()
        fitted, missing = _fit(tools, name, args)
        if missing:
            names = [_FIELD_NAMES.get(m, m.replace("_", " ")) for m in missing]
            nice = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
            hint = missing_hint(missing) if missing_hint else ""
            return f"I can help with {what}. Please tell me the {nice}.{hint}", ()
        return self._call(name, fitted)

    def _decide(self, text: str, tools: dict[str, dict[str, Any]],
                previous: str = "") -> tuple[str, tuple[ToolCallRequest, ...]]:
        """The first intent of :data:`_INTENTS` that recognises the request answers it."""
        request = _Request.parse(text, previous)
        for intent in _INTENTS:
            reply = intent(self, request, tools)
            if reply is not None:
                return reply
        return ("I'm the offline assistant, so I understand a fixed set of requests. " + capabilities(tools)
                + " Could you rephrase your request along those lines?"), ()

    # --- the intents, in the order they are tried ------------------------------------------------

    def _complaints(self, r: _Request, tools: Tools) -> Reply | None:
        if "complain" not in r.low and not r.complaint_id:
            return None
        return self._complaint(r.text, r.low, tools, r.complaint_id, r.customer, r.order_id)

    def _escalation(self, r: _Request, tools: Tools) -> Reply | None:
        if not re.search(r"\b(escalat|ticket|human|speak to (someone|a person)|supervisor)", r.low):
            return None
        args = {"ticket_id": _ticket_id(r.text), "customer_id": r.customer,
                "customer_email": r.emails[0] if r.emails else None,
                "query": r.text, "use_case": "UC2", "reason": "Customer asked for a human agent"}
        return self._ask(tools, _tool(tools, "sendemail"), args, "opening a support ticket")

    def _mail_check(self, r: _Request, tools: Tools) -> Reply | None:
        if not (_after(r.low, *_TEST_MAIL) or "test_connection" in r.low):
            return None
        return self._ask(tools, _tool(tools, "test_connection"), {}, "checking the mail connection")

    def _send_mail(self, r: _Request, tools: Tools) -> Reply | None:
        if not (re.search(r"\b(send|write)\b.{0,40}\be-?mail\b", r.low)
                or (r.emails and re.search(r"\be-?mail\b", r.low))):
            return None
        subject = _m(_SUBJECT, r.text)
        body = _BODY.search(r.text)
        if not body and r.order_id:
            body = f"This is an update about your order {r.order_id}."
        default_subject = "Your order " + r.order_id if r.order_id else "Message from Customer Service"
        args = {"to": ", ".join(r.emails) or None, "subject": subject or default_subject, "body": body}
        return self._ask(tools, _tool(tools, "send_email", "send_text_email"), args, "sending an email",
                         lambda _: " For example: send an email to jane@example.com with subject Hello"
                                   " saying Your order shipped.")

    def _create_order(self, r: _Request, tools: Tools) -> Reply | None:
        if not (_after(r.low, _CREATE, _ORDER_WORD) or _after(r.low, _ORDER_WORD, _CREATE_AFTER)):
            return None
        price = _m(_PRICE, r.text)
        qty = _m(_QTY, r.text)
        args = {"customer_id": r.customer, "product_sku": _m(_SKU, r.text), "quantity": int(qty) if qty else None,
                "price": float(price) if price else None, "shipping_address": _m(_ADDRESS, r.text)}
        return self._ask(tools, _tool(tools, "create_order"), args, "creating an order",
                         lambda _: " For example: create an order for customer CUST-1001, 2 x SKU WIDGET-1"
                                   " at 19.99, ship to 1 Main St, Springfield.")

    def _update_order(self, r: _Request, tools: Tools) -> Reply | None:
        if not (r.order_id and r.status and re.search(r"\b(mark|set|change|update|move|cancel)\b", r.low)):
            return None
        return self._ask(tools, _tool(tools, "update_order_status"),
                         {"order_id": r.order_id, "new_status": r.status, "status": r.status}, "updating an order")

    def _order_lookup(self, r: _Request, tools: Tools) -> Reply | None:
        if not r.order_id:
            return None
        return self._ask(tools, _tool(tools, "get_order_by_id"), {"order_id": r.order_id}, "looking up an order")

    def _customer_orders(self, r: _Request, tools: Tools) -> Reply | None:
        # Also the answer to our own question "what is the order number ... or your customer id?"
        if not (r.customer and ("order" in r.low or "order number" in r.previous)):
            return None
        return self._ask(tools, _tool(tools, "get_orders_by_customer"), {"customer_id": r.customer},
                         "finding a customer's orders")

    def _search_orders(self, r: _Request, tools: Tools) -> Reply | None:
        if "order" not in r.low:
            return None
        sku = _m(_SKU, r.text)
        address = _m(_SEARCH_ADDRESS, r.text)
        if not (sku or address or r.status):
            return None
        return self._ask(tools, _tool(tools, "search_orders"), {"sku": sku, "address": address, "status": r.status},
                         "searching orders")

    def _list_orders(self, r: _Request, tools: Tools) -> Reply | None:
        if not ("order" in r.low and re.search(r"\b(all|recent|latest|list|show|last)\b", r.low)):
            return None
        limit = _m(_LIMIT, r.text)
        return self._ask(tools, _tool(tools, "get_all_orders"), {"limit": int(limit) if limit else None},
                         "listing orders")

    def _order_question(self, r: _Request, tools: Tools) -> Reply | None:
        if "order" not in r.low:
            return None
        return ("I can help with your order. What is the order number (it looks like ORD-XXXXXXXX), "
                "or your customer id?"), ()

    def _small_talk(self, r: _Request, tools: Tools) -> Reply | None:
        if _GREETING.search(r.text):
            return "Hello! How can I help you today? " + capabilities(tools), ()
        if _THANKS.search(r.text):
            return "You're welcome! Is there anything else I can help you with?", ()
        if re.search(r"\b(help|what can you do|capabilit|how does this work)\b", r.low):
            return capabilities(tools) + " Just tell me what you need, for example: where is order ORD-1234ABCD?", ()
        return None

    def _complaint(self, text: str, low: str, tools: dict[str, dict[str, Any]], complaint_id: str | None,
                   customer: str | None, order_id: str | None) -> tuple[str, tuple[ToolCallRequest, ...]]:
        if complaint_id and re.search(r"\b(resolve|close|fix(ed)?)\b", low):
            resolution = _m(_RESOLUTION, text) or "Resolved by customer service."
            return self._ask(tools, _tool(tools, "resolve_complaint"),
                             {"complaint_id": complaint_id, "resolution": resolution}, "resolving a complaint")
        if complaint_id:
            return self._ask(tools, _tool(tools, "get_complaint"), {"complaint_id": complaint_id},
                             "looking up a complaint")
        if re.search(r"\b(find|search|list|show|my complaints)\b", low) and customer:
            return self._ask(tools, _tool(tools, "search_complaints"), {"customer_id": customer}, "finding complaints")
        description = re.split(r"[:\-–]\s+", text, maxsplit=1)[-1].strip() if re.search(r"[:\-–]\s+", text) else text
        category = next((c for c, words in _CATEGORIES.items() if any(w in low for w in words)), "other")
        priority = "high" if re.search(r"\b(urgent|asap|immediately|furious)\b", low) else "medium"
        args = {"customer_id": customer, "order_id": order_id, "category": category,
                "description": description, "priority": priority}
        return self._ask(tools, _tool(tools, "register_complaint"), args, "registering a complaint",
                         lambda _: " For example: register a complaint for customer CUST-1001 about order"
                                   " ORD-1234ABCD: the parcel arrived damaged.")

    # --- answering from tool results ---------------------------------------------------------

    def _summarise(self, messages: list[dict[str, Any]]) -> str:
        calls: dict[str, tuple[str, dict[str, Any]]] = {}
        for message in messages:
            for call in message.get("tool_calls") or ():
                try:
                    args = json.loads(call["function"]["arguments"] or "{}")
                except ValueError:
                    args = {}
                calls[call["id"]] = (call["function"]["name"], args if isinstance(args, dict) else {})
        results: list[str] = []
        for message in reversed(messages):
            if message.get("role") != "tool":
                break
            try:
                payload = json.loads(message.get("content") or "null")
            except ValueError:
                payload = message.get("content")
            name, args = calls.get(message.get("tool_call_id") or "", ("tool", {}))
            results.append(_describe(name, payload, args))
        return " ".join(reversed(results))


def _m(pattern: re.Pattern[str] | _Phrase, text: str, *, upper: bool = False, lower: bool = False) -> str | None:
    if isinstance(pattern, _Phrase):
        found = pattern.search(text)
        if found is None:
            return None
        value = found.rstrip(".,;")
    else:
        match = pattern.search(text)
        if not match:
            return None
        value = match.group(1).strip().rstrip(".,;")
    return value.upper() if upper else value.lower() if lower else value


def _ticket_id(text: str) -> str:
    found = re.search(r"\bTKT-\d{4}-\d{4,}\b", text)
    if found:
        return found.group(0)
    return f"TKT-{datetime.date.today().year}-{zlib.crc32(text.encode()) % 1_000_000:06d}"


def _order_line(order: dict[str, Any]) -> str:
    parts = [f"Order {order.get('order_id') or order.get('id')}"]
    if order.get("customer_id"):
        parts.append(f"for customer {order['customer_id']}")
    if order.get("product_sku"):
        parts.append(f"— {order.get('quantity', 1)} × {order['product_sku']}")
    if isinstance(order.get("price"), int | float):
        parts.append(f"at {order['price']:.2f}")
    if order.get("status"):
        parts.append(f"is {order['status']}")
    if order.get("shipping_address"):
        parts.append(f"(ships to {order['shipping_address']})")
    return " ".join(str(p) for p in parts) + "."


def _describe(name: str, payload: Any, args: dict[str, Any]) -> str:
    if isinstance(payload, dict) and "error" in payload and len(payload) == 1:
        return f"I couldn't complete that: {payload['error']}"
    if name not in _KNOWN:  # an MCP tool prefixed because of a name collision
        name = next((k for k in _KNOWN if name.endswith("_" + k)), name)
    if isinstance(payload, dict):
        order = payload.get("order")
        if isinstance(order, dict):
            verb = {"create_order": "I've created it: ", "update_order_status": "Updated: "}.get(name, "")
            return verb + _order_line(order)
        orders = payload.get("orders")
        if isinstance(orders, list):
            if not orders:
                return "I found no matching orders."
            lines = " ".join(_order_line(o) for o in orders[:10] if isinstance(o, dict))
            more = f" (and {len(orders) - 10} more)" if len(orders) > 10 else ""
            return f"I found {len(orders)} order(s): {lines}{more}"
        if name in ("send_email", "send_text_email", "send_html_email", "send_email_with_attachments"):
            if payload.get("sent"):
                outbox = payload.get("delivery") == "outbox"
                where = " (saved to the outbox, since no mail server is configured)" if outbox else ""
                return f"The email was sent to {', '.join(payload.get('recipients') or [])}{where}."
            return f"The email was not sent: {payload.get('error') or payload}"
        if name == "test_connection":
            if not payload.get("ok", payload.get("connected")):
                return f"The mail connection failed: {payload.get('error') or payload}"
            if payload.get("delivery") == "outbox":
                return ("No mail server is configured, so email goes to the local outbox folder, which is "
                        "writable. Nothing reaches a real mailbox until SMTP_SERVER is set.")
            return "The mail connection works."
        if name == "sendemail":
            return (f"I've opened support ticket {args.get('ticket_id', '')} and emailed the details to "
                    f"{(payload.get('recipients') or {}).get('customer', 'you')}; our team will reply within "
                    f"24-48 hours.")
        complaint = payload.get("complaint", payload if name in _COMPLAINT_TOOLS else None)
        if isinstance(complaint, dict) and (complaint.get("id") or complaint.get("complaint_id")):
            cid = complaint.get("id") or complaint.get("complaint_id")
            verb = {"register_complaint": "I've registered your complaint",
                    "resolve_complaint": "I've resolved complaint"}.get(name, "Complaint")
            about = str(complaint.get("description") or "").rstrip(" .")
            return f"{verb} {cid}, status {complaint.get('status')}: {about}."
        complaints = payload.get("complaints")
        if isinstance(complaints, list):
            if not complaints:
                return "I found no matching complaints."
            return f"I found {len(complaints)} complaint(s): " + "; ".join(
                f"{c.get('id') or c.get('complaint_id')} ({c.get('status')}): "
                f"{str(c.get('description') or '').rstrip(' .')}"
                for c in complaints[:10] if isinstance(c, dict)) + "."
    return f"Done. Result: {json.dumps(payload, default=str)[:500]}"


_COMPLAINT_TOOLS = frozenset({"register_complaint", "get_complaint", "update_complaint", "resolve_complaint",
                              "archive_complaint"})
_KNOWN = frozenset({
    "create_order", "get_order_by_id", "get_orders_by_customer", "search_orders", "update_order_status",
    "get_all_orders", "send_email", "send_text_email", "send_html_email", "send_email_with_attachments",
    "test_connection", "register_complaint", "get_complaint", "search_complaints", "update_complaint",
    "resolve_complaint", "archive_complaint", "sendemail",
})


# The intents of the offline assistant, tried in this order; the first that recognises a request
# answers it (complaints before orders: "complaint about order ORD-…" is a complaint).
_INTENTS: tuple[Callable[[OfflineProvider, _Request, Tools], Reply | None], ...] = (
    OfflineProvider._complaints,
    OfflineProvider._escalation,
    OfflineProvider._mail_check,
    OfflineProvider._send_mail,
    OfflineProvider._create_order,
    OfflineProvider._update_order,
    OfflineProvider._order_lookup,
    OfflineProvider._customer_orders,
    OfflineProvider._search_orders,
    OfflineProvider._list_orders,
    OfflineProvider._order_question,
    OfflineProvider._small_talk,
)
