"""The built-in ``handoff_to_human`` tool (HANDOFF_ENABLED): the model hands the conversation to a
person of the tenant's support team.

The tool itself only checks its arguments and tells the model the hand-over is under way; what
it means for the session happens when the turn ends, with the turn's commit: the tool loop
(agent/loop.py) stops after the round that called it, and the turn's execution
(agent/handoff.py) moves the session to ``waiting_for_human``, emits the ``handoff`` event and
ends the turn with ``done`` status ``with_human``. Doing it there, not here, keeps the mode
change and the turn's history together, and a stopped turn hands nothing over.
"""

from __future__ import annotations

from typing import Any

from msev15.agent.tools.registry import Tool, ToolContext
from msev15.mcpkit.capabilities import CONVERSATION_HANDOFF

HANDOFF_TOOL = "handoff_to_human"
MAX_REASON_CHARS = 500
MAX_SUMMARY_CHARS = 4000

_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "reason": {"type": "string", "minLength": 1, "maxLength": MAX_REASON_CHARS,
                   "description": "Why a person should take over, in a few words."},
        "summary": {"type": "string", "maxLength": MAX_SUMMARY_CHARS,
                    "description": "What the customer needs and what was done so far, for the operator."},
    },
    "required": ["reason", "summary"],
    "additionalProperties": False,
}


async def _handoff(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    return {"status": "handed_off",
            "note": "A person from the support team will take over this conversation. Do not answer further."}


def handoff_tools() -> list[Tool]:
    return [Tool(
        HANDOFF_TOOL,
        "Hand the conversation to a person on the support team, when the customer asks for a person or "
        "when you cannot help. Give the reason and a short summary for the operator. The turn ends "
        "after this call; a person answers the customer from then on.",
        _SCHEMA, _handoff, capability=CONVERSATION_HANDOFF)]
