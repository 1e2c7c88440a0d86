"""AG-UI's side of turns that wait (issue 23, rule 8): interrupts out, answers in.

Out: a turn that paused on an approval ends its run with ``RUN_FINISHED`` whose ``outcome`` is
``{"type": "interrupt", "interrupts": [...]}`` (one per waiting call, ``id`` = ``toolCallId`` =
the call id, after the call's ``TOOL_CALL_*`` events). A turn that paused only on frontend tools
is a completed run whose outcome names them (``{"type": "success", "pendingToolCallIds": [...]}``).

In: a run whose ``resume`` entries answer the interrupts (``resolved`` with payload
``{"approved": bool, "reason"?}``, or ``{"output": ...}`` for a frontend tool; ``cancelled``
rejects), or whose ``messages`` carry a ``tool`` message for a waiting frontend tool call,
decides those calls through the same path as the REST route; the step's last decision starts the
continuation, which this run then streams. A bad or unknown entry ends the run with ``RUN_ERROR``.
"""

from __future__ import annotations

import json
from typing import Any

from msev15.events.types import TurnCompleted
from msev15.store.pending import PausedTurn

_STATUSES = ("resolved", "cancelled")


class BadResume(ValueError):
    """A resume entry the protocol does not allow: the run ends with RUN_ERROR (validation_error)."""


def run_outcome(event: TurnCompleted) -> dict[str, Any] | None:
    """``RUN_FINISHED.outcome`` of a turn that paused; None for one that completed."""
    if event.status != "waiting":
        return None
    pending = list(event.pending)
    if any(p["kind"] == "approval" for p in pending):
        return {"type": "interrupt", "interrupts": [_interrupt(p) for p in pending]}
    return {"type": "success", "pendingToolCallIds": [p["call_id"] for p in pending]}


def _interrupt(pending: dict[str, Any]) -> dict[str, Any]:
    approval = pending["kind"] == "approval"
    return {"id": pending["call_id"], "reason": "tool_approval" if approval else "client_tool",
            "toolCallId": pending["call_id"],
            "message": (f"Approve the call of {pending['name']}?" if approval
                        else f"Run {pending['name']} and send its output."),
            "metadata": {"name": pending["name"], "arguments": pending["arguments"]}}


def resume_answers(raw: Any) -> list[tuple[str, dict[str, Any]]]:
    """(call id, REST decision body) of each resume entry; BadResume for a malformed one."""
    if not isinstance(raw, list):
        raise BadResume("resume must be an array of resume entries")
    answers = []
    for i, entry in enumerate(raw):
        if not isinstance(entry, dict) or not isinstance(entry.get("interruptId"), str):
            raise BadResume(f"resume[{i}] must be an object with a string interruptId")
        status = entry.get("status")
        if status not in _STATUSES:
            raise BadResume(f"resume[{i}].status must be resolved or cancelled")
        if status == "cancelled":
            answers.append((entry["interruptId"], {"approve": False, "reason": "cancelled"}))
            continue
        payload = entry.get("payload")
        if isinstance(payload, dict) and isinstance(payload.get("approved"), bool):
            reason = payload.get("reason")
            answers.append((entry["interruptId"], {"approve": payload["approved"],
                                                   **({"reason": reason} if reason is not None else {})}))
        elif isinstance(payload, dict) and "output" in payload:
            answers.append((entry["interruptId"], {"output": payload["output"]}))
        else:
            raise BadResume(f"resume[{i}].payload must be {{\"approved\": true|false, \"reason\"?: string}} "
                            "or {\"output\": ...}")
    return answers


def tool_answers(messages: list[dict[str, Any]], paused: PausedTurn | None) -> list[tuple[str, dict[str, Any]]]:
    """(call id, decision body) of each ``tool`` message that answers a waiting frontend tool call."""
    if paused is None:
        return []
    waiting = {w["call_id"] for w in paused.undecided() if w["kind"] == "client_tool"}
    answers = []
    for message in messages:
        call_id = message.get("toolCallId")
        if message.get("role") == "tool" and call_id in waiting:
            answers.append((str(call_id), {"output": _content(message.get("content"))}))
            waiting.discard(call_id)
    return answers


def _content(content: Any) -> Any:
    """A tool message's content: its JSON value when it is JSON text, else the text."""
    if isinstance(content, list):
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if isinstance(content, str):
        try:
            return json.loads(content)
        except ValueError:
            return content
    return content
