"""AG-UI (the Agent-User Interaction protocol) over SSE: ``POST /api/v1/ag-ui``.

A translation of one turn's events, nothing more: the body's last ``user`` message becomes a turn
started through :func:`msev15.handlers.chat.start_turn` (``threadId`` is the session), and the
turn's log becomes ``RUN_STARTED``, ``TEXT_MESSAGE_*``, ``TOOL_CALL_*`` and exactly one
``RUN_FINISHED`` or ``RUN_ERROR``. The server's history stays authoritative: earlier messages the
client sends are not trusted (nor read). Client-declared ``tools`` are offered to the model as
frontend tools; interrupts and resumes are in :mod:`msev15.handlers.agui_resume`.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web

from msev15.agent.context import REGISTRY
from msev15.agent.handoff import WITH_HUMAN
from msev15.config import SETTINGS
from msev15.events.turnlog import TurnRecord
from msev15.events.types import (
    Handoff,
    Token,
    ToolCalled,
    ToolFinished,
    TurnCompleted,
    TurnEvent,
    TurnFailed,
)
from msev15.handlers.agui_resume import BadResume, resume_answers, run_outcome, tool_answers
from msev15.handlers.chat import start_turn
from msev15.handlers.client_tools import client_tools
from msev15.handlers.errors import ApiError
from msev15.handlers.pending import apply_decision
from msev15.handlers.protocols import AGUI_ROLES, field_of, messages_of, request_tenant
from msev15.handlers.ratelimit import TENANT_COUNTED
from msev15.handlers.roles import caller_role
from msev15.handlers.streams import open_stream, relay
from msev15.handlers.validation import check_id, check_message, invalid, json_object
from msev15.store.pending import PENDING

log = logging.getLogger("api.agui")

_RUN_ID_MAX = 128


def _user_text(message: dict[str, Any], max_chars: int) -> str:
    """A user message's text: its ``content`` string, or the text of its content parts."""
    content = message.get("content")
    if isinstance(content, list):
        texts = [p["text"] for p in content if isinstance(p, dict) and p.get("type") == "text"]
        if not all(isinstance(t, str) for t in texts):
            raise invalid("messages: a text part's text must be a string", "messages")
        content = "\n".join(texts)
    return check_message(content, max_chars, "messages[-1].content")


def parse_run_input(body: dict[str, Any], max_chars: int) -> tuple[str, str, str, Any]:
    """(threadId, runId, the new user message, forwardedProps.tenant_id) of a ``RunAgentInput``."""
    thread_id = check_id(field_of(body, "threadId", str, "a string", required=True), "threadId")
    run_id = field_of(body, "runId", str, "a string", required=True)
    if not 0 < len(run_id) <= _RUN_ID_MAX or not run_id.isprintable():
        raise invalid(f"runId must be 1 to {_RUN_ID_MAX} printable characters", "runId")
    messages = messages_of(body, AGUI_ROLES)
    for name in ("tools", "context"):
        field_of(body, name, list, "an array")
    props = field_of(body, "forwardedProps", dict, "an object") or {}
    if "tenant_id" in props and props["tenant_id"] is None:
        raise invalid("forwardedProps.tenant_id must be a string, not null (leave it out)", "tenant_id")
    users = [m for m in messages if m["role"] == "user"]
    if not users:
        raise invalid("messages must contain a user message (the new turn)", "messages")
    return thread_id, run_id, _user_text(users[-1], max_chars), props.get("tenant_id")


async def _refused_run(request: web.Request, thread_id: str, run_id: str, code: str,
                       message: str) -> web.StreamResponse:
    """A run that cannot go on (a bad or unknown resume entry): RUN_STARTED, then RUN_ERROR."""
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await resp.prepare(request)
    await resp.write(_event("RUN_STARTED", threadId=thread_id, runId=run_id) +
                     _event("RUN_ERROR", message=message, code=code))
    await resp.write_eof()
    return resp


def _event(kind: str, **fields: Any) -> bytes:
    return b"data: " + json.dumps({"type": kind, **fields}, ensure_ascii=False).encode(
        "utf-8", "backslashreplace") + b"\n\n"


class AgUiTranslator:
    """Turn events to AG-UI events. Text between tool calls is one assistant message each; every
    message and tool call is closed before the run's last event."""

    def __init__(self, record: TurnRecord, thread_id: str, run_id: str) -> None:
        self.turn_id, self.thread_id, self.run_id = record.turn_id, thread_id, run_id
        self.text_id: str | None = None
        self.messages = 0
        self.texts = 0

    def _close_text(self, out: list[bytes]) -> None:
        if self.text_id is not None:
            out.append(_event("TEXT_MESSAGE_END", messageId=self.text_id))
            self.text_id = None

    def _text(self, out: list[bytes], delta: str) -> None:
        if not delta:
            return  # the protocol's deltas are never empty
        if self.text_id is None:
            self.messages += 1
            self.text_id = f"{self.turn_id}-m{self.messages}"
            out.append(_event("TEXT_MESSAGE_START", messageId=self.text_id, role="assistant"))
        self.texts += 1
        out.append(_event("TEXT_MESSAGE_CONTENT", messageId=self.text_id, delta=delta))

    def start(self) -> list[bytes]:
        return [_event("RUN_STARTED", threadId=self.thread_id, runId=self.run_id)]

    def failure(self) -> list[bytes]:
        frames: list[bytes] = []
        self._close_text(frames)
        frames.append(_event("RUN_ERROR", message="The stream failed; read the session history.",
                             code="internal_error"))
        return frames

    def translate(self, seq: int, event: TurnEvent, out: list[bytes]) -> None:
        match event:
            case Token(content=content):
                self._text(out, content)
            case ToolCalled():
                self._close_text(out)
                out.append(_event("TOOL_CALL_START", toolCallId=event.call_id, toolCallName=event.name))
                out.append(_event("TOOL_CALL_ARGS", toolCallId=event.call_id,
                                  delta=json.dumps(event.arguments, ensure_ascii=False)))
                out.append(_event("TOOL_CALL_END", toolCallId=event.call_id))
            case ToolFinished():
                # Like the SSE stream, clients get only whether the tool worked: its raw result
                # (or error text) is for the model and may name internals.
                out.append(_event("TOOL_CALL_RESULT", messageId=f"{self.turn_id}-r{event.call_id}",
                                  toolCallId=event.call_id, role="tool", content=json.dumps({"ok": event.ok})))
            case Handoff():  # a person has the session (AG-UI's CUSTOM event; the run ends with_human)
                self._close_text(out)
                out.append(_event("CUSTOM", name="handoff",
                                  value={"mode": event.mode, "reason": event.reason, "summary": event.summary}))
            case TurnCompleted():
                if not self.texts and event.message:
                    self._text(out, event.message)
                self._close_text(out)
                outcome = run_outcome(event)
                result: dict[str, Any] = {"turn_id": self.turn_id, "message_count": event.message_count,
                                          "profile_version": event.profile_version}
                if event.status == WITH_HUMAN:
                    result["status"] = WITH_HUMAN
                out.append(_event("RUN_FINISHED", threadId=self.thread_id, runId=self.run_id, result=result,
                                  **({"outcome": outcome} if outcome is not None else {})))
            case TurnFailed():
                self._close_text(out)
                out.append(_event("RUN_ERROR", message=event.message, code=event.error))


async def ag_ui(request: web.Request) -> web.StreamResponse:
    """Run the agent for one AG-UI RunAgentInput (CopilotKit, Microsoft Agent Framework, @ag-ui/client).
    ---
    summary: AG-UI run (Server-Sent Events)
    description: |
      The [AG-UI protocol](https://docs.ag-ui.com): send a `RunAgentInput` with
      `Accept: text/event-stream`; the answer is one `data:` JSON event per SSE message:
      `RUN_STARTED` first, `TEXT_MESSAGE_START`/`CONTENT`/`END` for the answer,
      `TOOL_CALL_START`/`ARGS`/`END` and `TOOL_CALL_RESULT` for each tool call, and exactly one
      `RUN_FINISHED` or `RUN_ERROR` last (any failure after the stream started is a `RUN_ERROR`).
      A handoff to a person is a `CUSTOM` event named `handoff` (value: mode, reason, summary);
      while a person holds the session a run only stores the message for them and finishes with
      `result.status: with_human`.

      `threadId` is the session id. The tenant is the `X-Tenant-ID` header, else
      `forwardedProps.tenant_id`, else `default`. The new turn is the **last `user` message**:
      the server keeps the conversation, so earlier messages the client sends are not trusted
      and not read. Client-declared `tools` (frontend tools) are offered to the model: a call of
      one ends the run after its `TOOL_CALL_*` events (`outcome.pendingToolCallIds`), and a run
      carrying the `tool` message with its result continues. A call that needs approval
      (TOOL_APPROVAL) ends the run with `outcome: {"type": "interrupt", ...}`; a run whose
      `resume` entries answer the interrupts continues (`resolved` with payload
      `{"approved": bool, "reason"?}`, `cancelled` rejects); a bad or unknown entry gets
      `RUN_ERROR`. A `TOOL_CALL_RESULT`'s content is
      `{"ok": true|false}`. The turn is the same turn the REST API sees (`X-Turn-ID` header):
      its status, resume and cancel routes work on it.
    tags: [front ends]
    parameters:
      - {in: header, name: X-Tenant-ID, required: false, schema: {$ref: "#/components/schemas/Id"}}
    requestBody:
      required: true
      content:
        application/json:
          schema: {$ref: "#/components/schemas/RunAgentInput"}
          example: {threadId: abc-123, runId: run-1, messages: [{id: m1, role: user, content: "Show my recent orders"}],
                    tools: [], context: [], state: {}, forwardedProps: {tenant_id: default}}
    responses:
      "200":
        description: AG-UI events.
        headers:
          X-Turn-ID: {description: "The turn's id (status, resume with the REST routes, cancel).", schema: {type: string}}
        content:
          text/event-stream:
            schema: {$ref: "#/components/schemas/AgUiFrame"}
            example: |
              data: {"type": "RUN_STARTED", "threadId": "abc-123", "runId": "run-1"}

              data: {"type": "TEXT_MESSAGE_START", "messageId": "t1-m1", "role": "assistant"}

              data: {"type": "TEXT_MESSAGE_CONTENT", "messageId": "t1-m1", "delta": "Hello"}

              data: {"type": "TEXT_MESSAGE_END", "messageId": "t1-m1"}

              data: {"type": "RUN_FINISHED", "threadId": "abc-123", "runId": "run-1", "result": {"turn_id": "t1", "message_count": 2}}
      "409": {$ref: "#/components/responses/TurnStopped"}
      "429": {$ref: "#/components/responses/TenantBusy"}
      "503": {$ref: "#/components/responses/Unavailable"}
    """  # noqa: E501 - an SSE data: line of the example cannot be wrapped
    body = await json_object(request)
    thread_id, run_id, message, forwarded_tenant = parse_run_input(body, request.app[SETTINGS].max_message_chars)
    tenant_id = request_tenant(request, forwarded_tenant)
    declared = body.get("tools") or []
    tools = client_tools([{k: t.get(k) for k in ("name", "description", "parameters") if k in t}
                          if isinstance(t, dict) else t for t in declared],
                         request.app[REGISTRY].tools()) if declared else ()
    counted = request.get(TENANT_COUNTED, False)
    try:
        answers = (resume_answers(body["resume"]) if body.get("resume") else
                   tool_answers(body["messages"], await request.app[PENDING].get(tenant_id, thread_id)))
        found: TurnRecord | None = None
        for call_id, decision in answers:  # the step's last decision starts its continuation
            found = (await apply_decision(request.app, tenant_id, thread_id, call_id, decision, counted=counted,
                                             role=caller_role(request)))[1]
    except BadResume as exc:
        return await _refused_run(request, thread_id, run_id, "validation_error", str(exc))
    except ApiError as exc:
        return await _refused_run(request, thread_id, run_id, exc.error, exc.message)
    if answers and found is None:
        return await _refused_run(request, thread_id, run_id, "input_required",
                                  "Other calls of this step still wait: answer every open interrupt.")
    record = found or await start_turn(request.app, tenant_id, thread_id, message, stream=True, counted=counted,
                                       tools=tools)
    async with open_stream(request, record, sep="\n") as resp:
        await relay(record, resp, AgUiTranslator(record, thread_id, run_id))
    return resp
