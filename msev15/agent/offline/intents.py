"""The requests the offline assistant understands: how each is recognised and what it does.

An :class:`Intent` has a ``what`` (the words of its questions, by which a later turn knows what
is being filled), a strong trigger (words that start this request even in the middle of another
one) and a weak one (a bare id, which starts it only when nothing is pending), and an ``act``
that turns the exchange into a tool call or a question for what is still missing. Tools are
found by capability, never by name.
"""

from __future__ import annotations

import datetime
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from msev15.agent.offline.exchange import ASK_MIDDLE, ASK_PREFIX, Exchange, question
from msev15.agent.offline.text import ORDER_ID, RESOLUTION, SEARCH_ADDRESS, Message, after, bare, ticket_id
from msev15.agent.offline.toolbox import Toolbox, two_examples, what_i_can_do
from msev15.mcpkit import capabilities as caps

Call = tuple[str, dict[str, Any]]  # (tool name, arguments)
Reply = tuple[str, Call | None]
_NONE = re.compile(r"(?!)")


def _re(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


@dataclass(frozen=True, slots=True)
class Intent:
    what: str
    act: Callable[[Exchange, Toolbox], Reply]
    strong: re.Pattern[str] | Callable[[Message], bool] = _NONE
    weak: Callable[[Message], bool] | None = None
    # Starts even when our question asked for free text ("never mind", "get me a person"): other
    # requests' words ("your order has shipped") are then read as the answer.
    overrides_free_text: bool = False

    def triggered(self, message: Message) -> bool:
        if isinstance(self.strong, re.Pattern):
            return self.strong.search(message.low) is not None
        return self.strong(message)


def ask(box: Toolbox, capability: str, args: dict[str, Any], what: str, x: Exchange, hint: str = "",
        need: tuple[str, ...] = ()) -> Reply:
    """Call the tool for ``capability`` with ``args`` (plus any bare answers to our questions),
    or ask for what its schema (or ``need``: what we never call it without) still needs."""
    for fields, answer in x.answers():
        alone = len(fields) == 1  # a whole answer is one detail only when one was asked for
        for field in fields:
            if args.get(field) in (None, "") and (alone or field not in FREE_TEXT):
                args[field] = bare(answer.text, field, alone=alone)
    name = box.find(capability, args)
    if name is None:
        return (f"Sorry, {what} is not available right now: this assistant has no such tool (its service is "
                "not connected, or this agent does not offer it)."), None
    fitted, missing = box.fit(name, args)
    missing += [n for n in need if n not in fitted and n not in missing and n in box.schema(name)[0]]
    if missing:
        return question(what, missing) + hint, None
    return "", (name, fitted)


FREE_TEXT = frozenset({"description", "shipping_address", "body", "subject", "resolution", "query"})
_CATEGORIES = {  # first match wins: "arrived damaged" is about the product, not the delivery
    "product": ("broken", "damaged", "defect", "faulty", "quality", "wrong item", "scratch", "stopped working"),
    "billing": ("charge", "bill", "refund", "invoice", "payment", "overcharg", "money back"),
    "delivery": ("late", "deliver", "shipping", "arriv", "lost", "parcel", "package", "courier", "never came"),
    "service": ("rude", "support", "service", "agent", "wait"),
}
_FILLER = _re(r"\b(?:i|i'd|i'm|me|want|would|like|wish|need|to|please|can|could|you|file|make|register|lodge|raise|"
              r"submit|open|put|in|a|an|the|new|complaint|complain|about|regarding|order|customer|my|for|id|is|"
              r"help|with|it)\b|[^a-z\s]++")
_URGENT = _re(r"\b(?:urgent|asap|immediately|furious)\b")
_EXAMPLE_ORDER = " For example: create an order for customer CUST-1001, 2 x SKU WIDGET-1 at 19.99, ship to 1 Main St."
_EXAMPLE_MAIL = " For example: send an email to jane@example.com with subject Hello saying Your order shipped."


def _description(x: Exchange) -> str | None:
    """The problem in the customer's words: after "order X:" in the first message, or the whole
    message when it says more than "I want to file a complaint"."""
    text = x.first.text
    colon = re.search(r"[:\-–]\s++", text)
    described = text[colon.end():].strip() if colon else text.strip()
    if len(_FILLER.sub(" ", ORDER_ID.sub(" ", described.lower())).split()) < 2:
        return None
    return described


def _complaint(x: Exchange, box: Toolbox) -> Reply:
    low = " ".join(m.low for m in x.messages)
    category = next((c for c, words in _CATEGORIES.items() if any(w in low for w in words)), "other")
    args = {"customer_id": x.latest("customer"), "order_id": x.latest("order_id"), "category": category,
            "description": _description(x), "priority": "high" if _URGENT.search(low) else "medium"}
    return ask(box, caps.COMPLAINT_REGISTER, args, "registering a complaint", x)


_RESOLVE = _re(r"\b(?:resolve|close|fix(?:ed)?|solved)\b")


def _follow_up(x: Exchange, box: Toolbox) -> Reply:
    complaint_id = x.latest("complaint_id")
    if complaint_id and _RESOLVE.search(x.current.low):
        resolution = RESOLUTION.value(x.current.text) or "Resolved by customer service."
        return ask(box, caps.COMPLAINT_RESOLVE, {"complaint_id": complaint_id, "resolution": resolution},
                   "resolving a complaint", x)
    if complaint_id:
        return ask(box, caps.COMPLAINT_GET, {"complaint_id": complaint_id}, "looking up a complaint", x)
    # A customer's complaints, never the whole tenant's.
    return ask(box, caps.COMPLAINT_SEARCH, {"customer_id": x.latest("customer")}, "finding complaints", x,
               need=("customer_id",))


# The hook for a live hand-over: when a tool with the handoff capability exists, "talk to a
# person" uses it (with the arguments its schema takes); until then it opens a support ticket.
def _talk_to_person(x: Exchange, box: Toolbox) -> Reply:
    if box.has(caps.CONVERSATION_HANDOFF):
        args = {"reason": "Customer asked to talk to a person", "customer_id": x.latest("customer"),
                "summary": x.first.text}
        return ask(box, caps.CONVERSATION_HANDOFF, args, "connecting you with a person", x)
    if not box.has(caps.TICKET_ESCALATE):
        return ("I can't connect you with a person from here, and no support-ticket service is connected. "
                + what_i_can_do(box) + two_examples(box)), None
    return _ticket(x, box, "Customer asked to talk to a person")


def _ticket(x: Exchange, box: Toolbox, reason: str = "") -> Reply:
    reason = reason or ("Customer asked to talk to a person" if _PERSON.search(x.first.low)
                        else "Customer asked for escalation")
    ticket = ticket_id(x.first.text, datetime.date.today().year, zlib.crc32(x.first.text.encode()))
    emails = x.latest("emails")
    args = {"ticket_id": ticket, "customer_id": x.latest("customer"), "customer_email": emails[0] if emails else None,
            "query": x.first.text, "use_case": "UC2", "reason": reason}
    return ask(box, caps.TICKET_ESCALATE, args, "opening a support ticket", x)


def _mail_check(x: Exchange, box: Toolbox) -> Reply:
    return ask(box, caps.EMAIL_CHECK, {}, "checking the mail connection", x)


def _send_mail(x: Exchange, box: Toolbox) -> Reply:
    order_id = x.latest("order_id")
    body = x.latest("body") or (f"This is an update about your order {order_id}." if order_id else None)
    subject = x.latest("subject") or ("Your order " + order_id if order_id else "Message from Customer Service")
    emails = x.latest("emails")
    args = {"to": ", ".join(emails) if emails else None, "subject": subject, "body": body}
    return ask(box, caps.EMAIL_SEND, args, "sending an email", x, _EXAMPLE_MAIL)


def _email_copy(x: Exchange, box: Toolbox) -> Reply:
    emails = x.latest("emails")
    args = {"to": ", ".join(emails) if emails else None, "subject": "A copy of our conversation",
            "body": x.earlier_answer or None}
    return ask(box, caps.EMAIL_SEND, args, "emailing a copy", x)


def _create_order(x: Exchange, box: Toolbox) -> Reply:
    args = {"customer_id": x.latest("customer"), "product_sku": x.latest("sku"), "quantity": x.latest("quantity"),
            "price": x.latest("price"), "shipping_address": x.latest("address")}
    return ask(box, caps.ORDER_CREATE, args, "creating an order", x, _EXAMPLE_ORDER)


def _set_status(x: Exchange, box: Toolbox) -> Reply:
    args = {"order_id": x.latest("order_id"), "status": x.latest("status")}
    return ask(box, caps.ORDER_SET_STATUS, args, "updating an order", x)


def _lookup(x: Exchange, box: Toolbox) -> Reply:
    order_id = x.latest("order_id")
    if order_id:
        return ask(box, caps.ORDER_LOOKUP, {"order_id": order_id}, "looking up an order", x)
    customer = x.latest("customer")
    if customer:
        return ask(box, caps.ORDERS_OF_CUSTOMER, {"customer_id": customer}, "finding a customer's orders", x)
    if len(x.messages) > 1:  # a bare answer to "what is the order number ... or your customer id?"
        answer = x.current.text.strip().rstrip(".!")
        if answer and " " not in answer and len(answer) <= 64:
            return ask(box, caps.ORDER_LOOKUP, {"order_id": answer.upper()}, "looking up an order", x)
    return (f"{ASK_PREFIX}your order{ASK_MIDDLE}order number (it looks like ORD-XXXXXXXX) "
            "or your customer id."), None


def _customer_orders(x: Exchange, box: Toolbox) -> Reply:
    return ask(box, caps.ORDERS_OF_CUSTOMER, {"customer_id": x.latest("customer")}, "finding a customer's orders", x)


def _search(x: Exchange, box: Toolbox) -> Reply:
    args = {"sku": x.latest("sku"), "address": SEARCH_ADDRESS.value(x.current.text), "status": x.latest("status")}
    return ask(box, caps.ORDER_SEARCH, args, "searching orders", x)


def _list(x: Exchange, box: Toolbox) -> Reply:
    return ask(box, caps.ORDER_LIST, {"limit": x.latest("limit")}, "listing orders", x)


def _drop(x: Exchange, box: Toolbox) -> Reply:
    return "All right, let's leave that. What else can I do for you?", None


_GREETING = _re(r"^\s*+(?:hi|hello|hey|good (?:morning|afternoon|evening)|greetings)\b")
_THANKS = _re(r"\b(?:thanks|thank you|cheers)\b")
_HELP = _re(r"\b(?:help|what can you do|capabilit|how does this work)\b")


def _small_talk(x: Exchange, box: Toolbox) -> Reply:
    if _GREETING.search(x.current.low):
        return "Hello! How can I help you today? " + what_i_can_do(box), None
    if _THANKS.search(x.current.low):
        return "You're welcome! Is there anything else I can help you with?", None
    return what_i_can_do(box) + " Just tell me what you need." + two_examples(box), None


_PERSON = _re(r"\b(?:human|real person|live (?:agent|person)|representative|operator)\b|\b(?:talk|speak|chat)"
              r"\s++(?:to|with)\s++(?:(?:a|an|some|your|the|real|live)\s++){0,2}(?:person|someone|"
              r"somebody|agent|staff|people)\b")
_ORDER = _re(r"\border\b")
_ORDERS = _re(r"\b(?:orders|purchases)\b")
_SET_VERB = _re(r"\b(?:mark|set|change|update|move|make|cancel)\b")
_LOOK = _re(r"\b(?:where|track|tracking|status|look|check|find|show|when|what's happening|happened|shipped|"
            r"arrive|delivered|dispatched)\b")
_SEND = (_re(r"\b(?:send|write|compose|forward)\b"), _re(r"\be-?mail\b"))
_MAIL_TO = _re(r"\be-?mail\s++(?:to\s++)?[a-z0-9._%+-]++@")
_COPY = (_re(r"\b(?:e-?mail|send|mail|forward)\b"), _re(r"\b(?:copy|transcript|summary|in writing)\b"))
_TEST_MAIL = (_re(r"\b(?:test|check|verify)\b"), _re(r"\b(?:mail|smtp|email)\b"), _re(r"\bconnect"))
_CREATE = _re(r"\b(?:create|place|make|new|put in)\b")
_CREATE_AFTER = _re(r"\b(?:create|place)")
_BUY = _re(r"\b(?:buy|purchase)\b|\b(?:like|want|wish|need)\s++to\s++order\b")
_MY_ORDERS = _re(r"\bmy\s++(?:past\s++|previous\s++)?orders\b|\bwhat did i order\b|\border history\b")
# "Show my recent orders" (the demo's first request) lists the latest orders, as it always has.
_RECENT = _re(r"\b(?:recent|latest|last)\b")
_LIST = _re(r"\b(?:all|recent|latest|list|show|last)\b")


def _set_status_trigger(m: Message) -> bool:
    has_order = m.order_id is not None or _ORDER.search(m.low) is not None
    if m.status and _SET_VERB.search(m.low) and has_order:
        return True
    return re.search(r"\b(?:change|update|modify)\s++(?:my\s++|the\s++|this\s++)?order\b", m.low) is not None


INTENTS: tuple[Intent, ...] = (  # tried in this order: complaints before orders ("complaint about order X")
    Intent("", _drop, _re(r"^\s*+(?:never\s*+mind|forget (?:it|that|about it)|no,? thanks|stop)\b"),
           overrides_free_text=True),
    Intent("connecting you with a person", _talk_to_person, _PERSON, overrides_free_text=True),
    Intent("opening a support ticket", _ticket, _re(r"\b(?:escalat|ticket\b|supervisor|manager)"),
           overrides_free_text=True),
    Intent("finding complaints", _follow_up,
           lambda m: m.complaint_id is not None or ("complain" in m.low and re.search(
               r"\b(?:follow(?:ing)?[- ]?up|status|update on|news|check on|my complaints|list|show|find|search|"
               r"what happened)", m.low) is not None)),
    Intent("registering a complaint", _complaint,
           _re(r"\b(?:complain|refund|money back|damaged|broken|faulty|defective|wrong item|scratched|"
               r"never (?:arrived|came)|(?:has|have|had|was) not (?:arrived|received)|stopped working|"
               r"does(?:n't| not) work)")),
    Intent("checking the mail connection", _mail_check, lambda m: after(m.low, *_TEST_MAIL)),
    Intent("emailing a copy", _email_copy, lambda m: after(m.low, *_COPY)),
    Intent("sending an email", _send_mail,
           lambda m: after(m.low, *_SEND) or _MAIL_TO.search(m.low) is not None),
    Intent("creating an order", _create_order,
           lambda m: after(m.low, _CREATE, _ORDER) or after(m.low, _ORDER, _CREATE_AFTER)
           or _BUY.search(m.low) is not None),
    Intent("updating an order", _set_status, _set_status_trigger),
    Intent("finding a customer's orders", _customer_orders,
           lambda m: (_MY_ORDERS.search(m.low) is not None and _RECENT.search(m.low) is None)
           or (m.customer is not None and _ORDERS.search(m.low) is not None)),
    Intent("searching orders", _search,
           lambda m: _ORDERS.search(m.low) is not None and bool(m.sku or m.status or SEARCH_ADDRESS.search(m.text))),
    Intent("listing orders", _list, lambda m: _ORDERS.search(m.low) is not None and _LIST.search(m.low) is not None),
    Intent("your order", _lookup, lambda m: _LOOK.search(m.low) is not None and (
        m.order_id is not None or _ORDER.search(m.low) is not None or re.search(
            r"\b(?:package|parcel|delivery)\b", m.low) is not None),
           weak=lambda m: m.order_id is not None or m.customer is not None or _ORDER.search(m.low) is not None),
    Intent("", _small_talk, lambda m: bool(_GREETING.search(m.low) or _THANKS.search(m.low)
                                           or _HELP.search(m.low))),
)
# The questions of these intents are answered by another intent's act.
ALIASES = {"looking up an order": "your order", "looking up a complaint": "finding complaints",
           "resolving a complaint": "finding complaints"}
BY_WHAT = {intent.what: intent for intent in INTENTS if intent.what}
