"""What a tool does, as a tag: how the offline assistant (and anything else that reasons about
tools without a model) finds the tool for a job, whatever the tool is called.

A local tool carries its tag on its registry entry; an MCP tool carries it in the tool's
``_meta`` under :data:`CAPABILITY_META_KEY` (the project's two servers set it). A server that
follows the product spec without tagging its tools is read through :data:`SPEC_TOOL_CAPABILITIES`,
the spec's tool names. A tool with no tag is offered to a real model as usual and left alone by
the offline assistant.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

CAPABILITY_META_KEY = "io.msev15/capability"

ORDER_LOOKUP = "order.lookup"
ORDERS_OF_CUSTOMER = "order.by_customer"
ORDER_SEARCH = "order.search"
ORDER_LIST = "order.list"
ORDER_CREATE = "order.create"
ORDER_SET_STATUS = "order.set_status"
EMAIL_SEND = "email.send"
EMAIL_CHECK = "email.check_connection"
COMPLAINT_REGISTER = "complaint.register"
COMPLAINT_GET = "complaint.get"
COMPLAINT_SEARCH = "complaint.search"
COMPLAINT_UPDATE = "complaint.update"
COMPLAINT_RESOLVE = "complaint.resolve"
TICKET_ESCALATE = "ticket.escalate"
# A live hand-over of the conversation to a person. No tool has it yet: when one does, "talk to a
# person" uses it before falling back to a ticket.
CONVERSATION_HANDOFF = "conversation.handoff"

# The tool names the product spec gives the complaints and escalation servers.
SPEC_TOOL_CAPABILITIES: Mapping[str, str] = {
    "register_complaint": COMPLAINT_REGISTER,
    "get_complaint": COMPLAINT_GET,
    "search_complaints": COMPLAINT_SEARCH,
    "update_complaint": COMPLAINT_UPDATE,
    "resolve_complaint": COMPLAINT_RESOLVE,
    "sendemail": TICKET_ESCALATE,
}


def capability_meta(capability: str) -> dict[str, Any]:
    """The ``_meta`` an MCP server declares on a tool that does ``capability``."""
    return {CAPABILITY_META_KEY: capability}


def capability_of(name: str, meta: Mapping[str, Any] | None) -> str | None:
    """An MCP tool's tag: its own ``_meta`` first, then the spec's name for it."""
    declared = (meta or {}).get(CAPABILITY_META_KEY)
    if isinstance(declared, str) and declared:
        return declared
    return SPEC_TOOL_CAPABILITIES.get(name)
