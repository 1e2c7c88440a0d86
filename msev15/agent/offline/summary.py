"""Answering from tool results: one sentence per result, read by what the called tool does."""

from __future__ import annotations

import json
from typing import Any

from msev15.agent.offline.toolbox import Toolbox
from msev15.mcpkit import capabilities as caps

_COMPLAINT_CAPABILITIES = frozenset({caps.COMPLAINT_REGISTER, caps.COMPLAINT_GET, caps.COMPLAINT_UPDATE,
                                     caps.COMPLAINT_RESOLVE})


def summarise(messages: list[dict[str, Any]], box: Toolbox) -> str:
    """The answer to the tool results that end ``messages``."""
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
        results.append(describe(box.capability(name), payload, args))
    return " ".join(reversed(results))


def order_line(order: dict[str, Any]) -> str:
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


def _orders(capability: str | None, payload: dict[str, Any]) -> str | None:
    order = payload.get("order")
    if isinstance(order, dict):
        verb = {caps.ORDER_CREATE: "I've created it: ", caps.ORDER_SET_STATUS: "Updated: "}.get(capability or "", "")
        return verb + order_line(order)
    orders = payload.get("orders")
    if isinstance(orders, list):
        if not orders:
            return "I found no matching orders."
        lines = " ".join(order_line(o) for o in orders[:10] if isinstance(o, dict))
        more = f" (and {len(orders) - 10} more)" if len(orders) > 10 else ""
        return f"I found {len(orders)} order(s): {lines}{more}"
    return None


def _mail(capability: str | None, payload: dict[str, Any], args: dict[str, Any]) -> str | None:
    if capability == caps.EMAIL_SEND:
        if payload.get("sent"):
            outbox = payload.get("delivery") == "outbox"
            where = " (saved to the outbox, since no mail server is configured)" if outbox else ""
            return f"The email was sent to {', '.join(payload.get('recipients') or [])}{where}."
        return f"The email was not sent: {payload.get('error') or payload}"
    if capability == caps.EMAIL_CHECK:
        if not payload.get("ok", payload.get("connected")):
            return f"The mail connection failed: {payload.get('error') or payload}"
        if payload.get("delivery") == "outbox":
            return ("No mail server is configured, so email goes to the local outbox folder, which is "
                    "writable. Nothing reaches a real mailbox until SMTP_SERVER is set.")
        return "The mail connection works."
    if capability == caps.TICKET_ESCALATE:
        return (f"I've opened support ticket {args.get('ticket_id', '')} and emailed the details to "
                f"{(payload.get('recipients') or {}).get('customer', 'you')}; our team will reply within "
                f"24-48 hours.")
    return None


def _complaints(capability: str | None, payload: dict[str, Any]) -> str | None:
    complaint = payload.get("complaint", payload if capability in _COMPLAINT_CAPABILITIES else None)
    if isinstance(complaint, dict) and (complaint.get("id") or complaint.get("complaint_id")):
        cid = complaint.get("id") or complaint.get("complaint_id")
        verb = {caps.COMPLAINT_REGISTER: "I've registered your complaint",
                caps.COMPLAINT_RESOLVE: "I've resolved complaint"}.get(capability or "", "Complaint")
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
    return None


def describe(capability: str | None, payload: Any, args: dict[str, Any]) -> str:
    if isinstance(payload, dict) and "error" in payload and len(payload) == 1:
        return f"I couldn't complete that: {payload['error']}"
    if isinstance(payload, dict) and payload.get("declined") is True:  # a call that waited and was not run
        return f"I did not do that: {payload.get('message') or 'it was declined'} (reason: {payload.get('reason')})."
    if isinstance(payload, dict):
        found = _orders(capability, payload) or _mail(capability, payload, args) or _complaints(capability, payload)
        if found:
            return found
    return f"Done. Result: {json.dumps(payload, default=str, ensure_ascii=False)[:500]}"
