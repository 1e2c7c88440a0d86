"""A2A 1.0 tasks over turns: the task id is the turn id, the ``contextId`` the session id.

A task is read from the turn log, never stored on its own: its state follows the turn's status
(queued → SUBMITTED, running → WORKING, then COMPLETED, FAILED or CANCELED), its one artifact
(``answer``) is the text the turn streamed, and a turn that ends waiting for a person (its
``done`` carries ``status: waiting`` with ``pending`` calls, or ``with_human``) is
INPUT_REQUIRED with what it waits for in a data part.

:class:`A2aTranslator` is the protocol's translator for :func:`msev15.handlers.streams.relay`:
a snapshot of the task at the point the stream starts (``Task``), then
``TaskArtifactUpdateEvent`` chunks and ``TaskStatusUpdateEvent`` s. Because the snapshot holds
everything up to the seq the relay resumes after, a resubscribed client gets each chunk once.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from a2a.types import a2a_pb2 as pb
from google.protobuf.json_format import MessageToDict

from msev15.events.turnlog import TurnView
from msev15.events.types import (
    TERMINAL,
    Handoff,
    Token,
    ToolCalled,
    ToolFinished,
    TurnCompleted,
    TurnEvent,
    TurnFailed,
    to_wire,
)

ARTIFACT_ID = "answer"
WAITING = ("waiting", "with_human")
STATE_OF_STATUS: dict[str, pb.TaskState] = {
    "queued": pb.TASK_STATE_SUBMITTED, "running": pb.TASK_STATE_WORKING, "completed": pb.TASK_STATE_COMPLETED,
    "failed": pb.TASK_STATE_FAILED, "cancelled": pb.TASK_STATE_CANCELED, "interrupted": pb.TASK_STATE_CANCELED,
}
FINAL_STATES = (pb.TASK_STATE_COMPLETED, pb.TASK_STATE_FAILED, pb.TASK_STATE_CANCELED, pb.TASK_STATE_REJECTED)

Encode = Callable[[pb.StreamResponse], dict[str, Any]]


def _clean(text: str) -> str:
    """Protobuf strings (and the A2A clients that parse them) need valid UTF-8, and a model may
    send a lone surrogate (as on the SSE stream): it is kept as its escape, ``\\ud800``, rather
    than failing the task or its reader."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _part(text: str) -> pb.Part:
    return pb.Part(text=_clean(text))


def waiting(event: TurnEvent) -> dict[str, Any] | None:
    """The ``done`` of a turn that ends waiting for a decision or a person, else None."""
    if not isinstance(event, TurnCompleted):
        return None
    wire = to_wire(event)
    return wire if wire.get("status") in WAITING else None


def _agent_message(turn_id: str, suffix: str, parts: list[pb.Part]) -> pb.Message:
    return pb.Message(message_id=f"{turn_id}-{suffix}", role=pb.ROLE_AGENT, parts=parts)


def _end_status(view: TurnView, terminal: TurnCompleted | TurnFailed) -> pb.TaskStatus:
    if isinstance(terminal, TurnFailed):
        state = pb.TASK_STATE_CANCELED if terminal.error in ("cancelled", "interrupted") else pb.TASK_STATE_FAILED
        text = f"{terminal.error}: {terminal.message}"
        return pb.TaskStatus(state=state, message=_agent_message(view.turn_id, "status", [_part(text)]))
    wait = waiting(terminal)
    if wait is not None:
        # The calls themselves ({kind, call_id, name, arguments}), as /chat's reply gives them: a
        # caller decides on what it can see. The stream's done event lists only their ids.
        assert isinstance(terminal, TurnCompleted)
        data = {"status": wait["status"], "pending": [dict(call) for call in terminal.pending]}
        part = pb.Part(media_type="application/json")
        part.data.struct_value.update(data)
        return pb.TaskStatus(state=pb.TASK_STATE_INPUT_REQUIRED,
                             message=_agent_message(view.turn_id, "status", [part]))
    return pb.TaskStatus(state=pb.TASK_STATE_COMPLETED)


def _status(view: TurnView, events: Sequence[TurnEvent]) -> pb.TaskStatus:
    if events and isinstance(events[-1], TERMINAL):
        return _end_status(view, events[-1])
    if not events and view.status == "queued":
        return pb.TaskStatus(state=pb.TASK_STATE_SUBMITTED)
    return pb.TaskStatus(state=pb.TASK_STATE_WORKING)


def task_of(view: TurnView, upto: int | None = None, include_artifacts: bool = True) -> pb.Task:
    """The task as the turn's first ``upto`` events make it (all of them when None)."""
    events = view.events[:upto] if upto is not None else list(view.events)
    task = pb.Task(id=view.turn_id, context_id=view.session_id, status=_status(view, events))
    if include_artifacts:
        text = "".join(e.content for e in events if isinstance(e, Token))
        if not text and events and isinstance(events[-1], TurnCompleted):
            text = events[-1].message
        if text:
            task.artifacts.append(pb.Artifact(artifact_id=ARTIFACT_ID, name="answer", parts=[_part(text)]))
    return task


def core_encode(response: pb.StreamResponse) -> dict[str, Any]:
    encoded: dict[str, Any] = MessageToDict(response)
    return encoded


class A2aTranslator:
    """Turn events to JSON-RPC responses on SSE ``data:`` lines (``id: {turn_id}:{seq}`` before
    each, so a plain SSE client can resume with ``Last-Event-ID`` too)."""

    def __init__(self, record: TurnView, rpc_id: str | int | None, after: int, encode: Encode = core_encode,
                 snapshot: bool = True) -> None:
        self.record = record
        self.rpc_id = rpc_id
        self.after = after
        self.encode = encode
        self.snapshot = snapshot
        self.first = first = task_of(record, after)
        if after == 0:  # a new stream: SUBMITTED, then WORKING with its first event
            first.status.state = pb.TASK_STATE_SUBMITTED
        self.chunks = len(first.artifacts)  # text already sent in the snapshot: later chunks append
        self.working = first.status.state != pb.TASK_STATE_SUBMITTED

    def _data(self, response: pb.StreamResponse) -> bytes:
        body = {"jsonrpc": "2.0", "id": self.rpc_id, "result": self.encode(response)}
        return json.dumps(body, ensure_ascii=False).encode("utf-8", "backslashreplace")

    def _frame(self, seq: int | None, response: pb.StreamResponse) -> bytes:
        head = b"" if seq is None else b"id: %s:%d\n" % (self.record.turn_id.encode(), seq)
        return head + b"data: " + self._data(response) + b"\n\n"

    def _text_frame(self, seq: int, text: str) -> bytes:
        """A text chunk as :meth:`_chunk` and ``core_encode`` make it, built as a dict: the per-token
        path (protobuf objects and ``MessageToDict`` took about 25 µs a token)."""
        artifact = {"artifactId": ARTIFACT_ID, "name": "answer", "parts": [{"text": _clean(text)}]}
        update: dict[str, Any] = {"taskId": self.record.turn_id, "contextId": self.record.session_id,
                                  "artifact": artifact}
        if self.chunks > 0:
            update["append"] = True
        self.chunks += 1
        body = {"jsonrpc": "2.0", "id": self.rpc_id, "result": {"artifactUpdate": update}}
        return (b"id: %s:%d\ndata: " % (self.record.turn_id.encode(), seq)
                + json.dumps(body, ensure_ascii=False).encode() + b"\n\n")

    def _status(self, status: pb.TaskStatus) -> pb.StreamResponse:
        record = self.record
        return pb.StreamResponse(status_update=pb.TaskStatusUpdateEvent(
            task_id=record.turn_id, context_id=record.session_id, status=status))

    def _chunk(self, text: str, last: bool) -> pb.StreamResponse:
        record = self.record
        parts = [_part(text)] if text else []
        update = pb.TaskArtifactUpdateEvent(task_id=record.turn_id, context_id=record.session_id,
                                            artifact=pb.Artifact(artifact_id=ARTIFACT_ID, name="answer", parts=parts),
                                            append=self.chunks > 0, last_chunk=last)
        self.chunks += 1
        return pb.StreamResponse(artifact_update=update)

    def opening(self) -> list[bytes]:
        """The task as the stream starts: sent at once, before the relay waits for the next event
        (a resubscribed client must not wait for one to learn where the task stands)."""
        if not self.snapshot:
            return []
        return [self._frame(None, pb.StreamResponse(task=self.first))]

    def start(self) -> list[bytes]:
        return []  # the opening frame went out already

    def _working(self, seq: int, out: list[bytes], data: dict[str, Any] | None = None) -> None:
        if data is None and self.working:
            return
        self.working = True
        status = pb.TaskStatus(state=pb.TASK_STATE_WORKING)
        if data is not None:
            part = pb.Part(media_type="application/json")
            part.data.struct_value.update(data)
            status.message.CopyFrom(_agent_message(self.record.turn_id, f"s{seq}", [part]))
        out.append(self._frame(seq, self._status(status)))

    def translate(self, seq: int, event: TurnEvent, out: list[bytes]) -> None:
        match event:
            case Token(content=content):
                self._working(seq, out)
                if content:
                    out.append(self._text_frame(seq, content) if self.encode is core_encode
                               else self._frame(seq, self._chunk(content, last=False)))
            case ToolCalled():
                self._working(seq, out, {"tool_call": {"name": event.name, "call_id": event.call_id}})
            case ToolFinished():
                # Only whether the tool worked: its result is for the model (as on the SSE stream).
                self._working(seq, out, {"tool_result": {"name": event.name, "call_id": event.call_id,
                                                         "ok": event.ok}})
            case Handoff():  # a person has the session; the task ends INPUT_REQUIRED, with_human
                self._working(seq, out, {"handoff": {"mode": event.mode, "reason": event.reason,
                                                     "summary": event.summary}})
            case TurnCompleted():
                text = event.message if self.chunks == 0 else ""
                out.append(self._frame(seq, self._chunk(text, last=True)))
                out.append(self._frame(seq, self._status(_end_status(self.record, event))))
            case TurnFailed():
                self.working = True
                out.append(self._frame(seq, self._status(_end_status(self.record, event))))

    def failure(self) -> list[bytes]:
        error = {"code": -32603, "message": "The stream failed; read the task with GetTask or subscribe again."}
        body = {"jsonrpc": "2.0", "id": self.rpc_id, "error": error}
        return [b"data: " + json.dumps(body).encode() + b"\n\n"]
