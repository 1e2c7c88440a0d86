"""The events of a chat turn. Small frozen values; serialized for the wire in one place."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

BusyPolicy = Literal["enqueue", "reject", "interrupt"]
BUSY_POLICIES: tuple[BusyPolicy, ...] = ("enqueue", "reject", "interrupt")
WaitKind = Literal["approval", "client_tool"]  # why a tool call waits for a person or the client


@dataclass(frozen=True, slots=True)
class ClientTool:
    """A tool the caller declares and runs itself (REST ``tools``, AG-UI and AI SDK frontend tools)."""

    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True, slots=True)
class TurnEvent:
    turn_id: str
    tenant_id: str
    session_id: str
    request_id: str


@dataclass(frozen=True, slots=True)
class TurnRequested(TurnEvent):
    message: str
    stream: bool = False
    if_busy: BusyPolicy = "enqueue"
    resumes: str | None = None  # a continuation: the id of the turn whose waiting calls were decided
    tools: tuple[ClientTool, ...] = ()


@dataclass(frozen=True, slots=True)
class Token(TurnEvent):
    content: str


@dataclass(frozen=True, slots=True)
class ToolCalled(TurnEvent):
    name: str
    call_id: str
    arguments: Any = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ToolFinished(TurnEvent):
    name: str
    call_id: str
    ok: bool
    error: str | None = None


@dataclass(frozen=True, slots=True)
class InputRequired(TurnEvent):
    """A call of the turn's last step waits for a decision (``approval``) or an output (``client_tool``)."""

    kind: str
    call_id: str
    name: str
    arguments: Any = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CallSettled(TurnEvent):
    """A waiting call got its answer (for metrics and logs; not sent to clients): ``outcome`` is
    approved, rejected, output, superseded, expired or cancelled; ``waited`` the seconds from the
    request to the decision (None when nobody decided)."""

    name: str
    kind: str
    outcome: str
    waited: float | None = None


@dataclass(frozen=True, slots=True)
class Handoff(TurnEvent):
    """The session now waits for a person (or tells a customer who is already with one)."""

    mode: str
    reason: str = ""
    summary: str = ""


@dataclass(frozen=True, slots=True)
class TurnCompleted(TurnEvent):
    message: str
    message_count: int
    usage: dict[str, int] | None = None
    elapsed: float = 0.0  # seconds from acceptance to the end (metrics; not sent to clients)
    ttft: float | None = None  # seconds from acceptance to the first token, if any
    # "waiting": the turn paused on calls that wait (see ``pending``); "with_human": it handed the
    # session to a person.
    status: str = "completed"
    pending: tuple[dict[str, Any], ...] = ()  # {kind, call_id, name, arguments} of each waiting call
    profile_version: int = 0  # the tenant's profile version the turn ran with (0: the service's defaults)


@dataclass(frozen=True, slots=True)
class TurnFailed(TurnEvent):
    error: str
    message: str
    status: int = 500
    retry_after: float | None = None  # seconds, when the model said when to come back (HTTP 429)
    elapsed: float = 0.0
    ttft: float | None = None
    detail: str | None = None  # the envelope's detail: what the model endpoint said, what to check
    profile_version: int = 0


TERMINAL = (TurnCompleted, TurnFailed)
CLIENT_EVENTS = (Token, ToolCalled, ToolFinished, InputRequired, Handoff, TurnCompleted, TurnFailed)


def retry_after_seconds(seconds: float) -> int:
    """A ``Retry-After`` value: whole seconds, rounded up, at least 1."""
    return max(1, math.ceil(seconds))


def to_wire(event: TurnEvent) -> dict[str, Any]:
    """The SSE ``data:`` object of a client event, ``type`` first."""
    match event:
        case Token(content=content):
            return {"type": "token", "content": content, "session_id": event.session_id}
        case ToolCalled():
            return {"type": "tool_call", "name": event.name, "call_id": event.call_id,
                    "arguments": event.arguments, "session_id": event.session_id}
        case ToolFinished():
            # The error text is for the model and the logs: it can name internals (an SMTP host, an
            # MCP server's own message), so clients get only ``ok``.
            return {"type": "tool_result", "name": event.name, "call_id": event.call_id,
                    "ok": event.ok, "session_id": event.session_id}
        case InputRequired():
            return {"type": "input_required", "kind": event.kind, "call_id": event.call_id, "name": event.name,
                    "arguments": event.arguments, "turn_id": event.turn_id, "session_id": event.session_id}
        case Handoff(reason="", summary=""):  # a message to a session a person holds: nobody asked now
            return {"type": "handoff", "mode": event.mode, "session_id": event.session_id}
        case Handoff():
            return {"type": "handoff", "mode": event.mode, "reason": event.reason, "summary": event.summary,
                    "session_id": event.session_id}
        case TurnCompleted():
            wire: dict[str, Any] = {"type": "done", "session_id": event.session_id,
                                    "message_count": event.message_count, "turn_id": event.turn_id,
                                    "profile_version": event.profile_version}
            if event.usage:
                wire["usage"] = event.usage
            if event.status != "completed":
                wire["status"] = event.status
            if event.status == "waiting":
                wire["pending"] = [p["call_id"] for p in event.pending]
            return wire
        case TurnFailed():
            failed: dict[str, Any] = {"type": "error", "error": event.error, "message": event.message,
                                      "request_id": event.request_id, "session_id": event.session_id,
                                      "turn_id": event.turn_id}
            if event.retry_after is not None:
                failed["retry_after"] = retry_after_seconds(event.retry_after)
            if event.detail:
                failed["detail"] = event.detail
            return failed
    raise TypeError(f"{type(event).__name__} is not sent to clients")
