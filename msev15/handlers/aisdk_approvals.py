"""The AI SDK's side of turns that wait (issue 23, rule 9): approval responses and client tool
outputs in the UI messages of the next request.

Out, the translator streams ``tool-input-available`` then ``tool-approval-request``
(``approvalId`` = the call id) for a call that needs approval, and a client tool's call as
``tool-input-available``; the message then finishes (``finishReason: tool-calls``).

In, the last UI message of the next request is the assistant message whose tool parts the client
answered: a part in state ``approval-responded`` (from ``addToolApprovalResponse``) decides an
approval, one in ``output-available`` (from ``addToolOutput``) gives a client tool its output.
Those decisions go through the REST route's path; the step's last starts the continuation, which
that request then streams.
"""

from __future__ import annotations

from typing import Any

from msev15.store.pending import PausedTurn


def _tool_part(part: Any) -> bool:
    kind = part.get("type") if isinstance(part, dict) else None
    return isinstance(kind, str) and (kind.startswith("tool-") or kind == "dynamic-tool")


def ui_answers(messages: list[dict[str, Any]], paused: PausedTurn | None) -> list[tuple[str, dict[str, Any]]]:
    """(call id, REST decision body) of each answered tool part of the last (assistant) message."""
    if paused is None or not messages or messages[-1].get("role") != "assistant":
        return []
    waiting = {w["call_id"]: w["kind"] for w in paused.undecided()}
    answers: list[tuple[str, dict[str, Any]]] = []
    for part in messages[-1].get("parts") or ():
        if not _tool_part(part):
            continue
        call_id, state = part.get("toolCallId"), part.get("state")
        kind = waiting.pop(call_id, None) if isinstance(call_id, str) else None
        if kind == "approval" and state == "approval-responded":
            approval = part.get("approval") if isinstance(part.get("approval"), dict) else {}
            reason = approval.get("reason")
            answers.append((call_id, {"approve": approval.get("approved"),
                                      **({"reason": reason} if reason is not None else {})}))
        elif kind == "client_tool" and state == "output-available":
            answers.append((call_id, {"output": part.get("output")}))
        elif kind == "client_tool" and state == "output-error":
            answers.append((call_id, {"output": {"error": part.get("errorText") or "The client tool failed."}}))
    return answers
