"""The Vercel AI SDK's UI message stream: ``POST /api/v1/ai-sdk/chat`` and its resume route.

What ``DefaultChatTransport`` (``useChat``) sends: ``{id, messages, trigger, messageId}`` with UI
messages (``parts``). The last user message's text parts become a turn started through
:func:`msev15.handlers.chat.start_turn` (``id`` is the session); the turn's log becomes the UI
message stream parts. The server's history stays authoritative: earlier messages are not read.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from aiohttp import web

from msev15.agent.context import REGISTRY
from msev15.agent.coordination import COORDINATION
from msev15.config import SETTINGS
from msev15.events.turnlog import TurnView
from msev15.events.types import (
    Handoff,
    InputRequired,
    Token,
    ToolCalled,
    ToolFinished,
    TurnCompleted,
    TurnEvent,
    TurnFailed,
)
from msev15.handlers.aisdk_approvals import ui_answers
from msev15.handlers.chat import start_turn
from msev15.handlers.client_tools import client_tools
from msev15.handlers.errors import ApiError
from msev15.handlers.pending import apply_decision
from msev15.handlers.protocols import AISDK_PART_TYPE, AISDK_ROLES, field_of, messages_of, request_tenant
from msev15.handlers.ratelimit import TENANT_COUNTED
from msev15.handlers.roles import caller_role
from msev15.handlers.streams import open_stream, relay
from msev15.handlers.validation import check_id, check_message, invalid, json_object
from msev15.store.pending import PENDING

log = logging.getLogger("api.aisdk")

STREAM_HEADER = {"x-vercel-ai-ui-message-stream": "v1", "x-accel-buffering": "no"}
_TRIGGERS = ("submit-message", "regenerate-message")
_DONE = b"data: [DONE]\n\n"
_PART_TYPE = re.compile(AISDK_PART_TYPE)


def parse_chat(body: dict[str, Any], max_chars: int) -> tuple[str, str]:
    """(session id, the new user message) of a ``DefaultChatTransport`` request."""
    session_id = check_id(field_of(body, "id", str, "a string", required=True), "id")
    messages = messages_of(body, AISDK_ROLES)
    trigger = field_of(body, "trigger", str, "a string")
    if trigger is not None and trigger not in _TRIGGERS:
        raise invalid("trigger must be submit-message or regenerate-message", "trigger")
    if body.get("messageId") is not None:  # null is what some transports send for "no message id"
        field_of(body, "messageId", str, "a string")
    for message in messages:
        parts = message.get("parts")
        if not isinstance(parts, list) or not all(
                isinstance(p, dict) and isinstance(p.get("type"), str) and _PART_TYPE.fullmatch(p["type"])
                for p in parts):
            raise invalid("a UI message's parts must be an array of parts with a known type", "messages")
        if any(p["type"] == "text" and not isinstance(p.get("text"), str) for p in parts):
            raise invalid("a text part's text must be a string", "messages")
    users = [m for m in messages if m["role"] == "user"]
    if not users:
        raise invalid("messages must contain a user message (the new turn)", "messages")
    parts = users[-1]["parts"]
    texts = [p["text"] for p in parts if p["type"] == "text"]
    return session_id, check_message("\n".join(texts), max_chars, "messages[-1].parts")


def _part(kind: str, **fields: Any) -> bytes:
    return b"data: " + json.dumps({"type": kind, **fields}, ensure_ascii=False).encode(
        "utf-8", "backslashreplace") + b"\n\n"


class AiSdkTranslator:
    """Turn events to UI message stream parts. A step is one model round: text after tool
    results starts a new step; each text block between tool calls is one text part."""

    def __init__(self, record: TurnView) -> None:
        self.turn_id = record.turn_id
        self.text_id: str | None = None
        self.blocks = 0
        self.after_tools = False
        self.texts = 0

    def start(self) -> list[bytes]:
        return [_part("start", messageId=f"msg-{self.turn_id}", messageMetadata={"turnId": self.turn_id}),
                _part("start-step")]

    def _close_text(self, out: list[bytes]) -> None:
        if self.text_id is not None:
            out.append(_part("text-end", id=self.text_id))
            self.text_id = None

    def _text(self, out: list[bytes], delta: str) -> None:
        if not delta:
            return
        if self.after_tools:  # the model answers the tool results: a new step
            out += [_part("finish-step"), _part("start-step")]
            self.after_tools = False
        if self.text_id is None:
            self.blocks += 1
            self.text_id = f"{self.turn_id}-t{self.blocks}"
            out.append(_part("text-start", id=self.text_id))
        self.texts += 1
        out.append(_part("text-delta", id=self.text_id, delta=delta))

    def failure(self) -> list[bytes]:
        return [_part("error", errorText="internal_error: the stream failed; read the history."), _DONE]

    def translate(self, seq: int, event: TurnEvent, out: list[bytes]) -> None:
        """Append the parts of ``event`` (the last ones end with ``[DONE]``)."""
        match event:
            case Token(content=content):
                self._text(out, content)
            case ToolCalled():
                self._close_text(out)
                out.append(_part("tool-input-available", toolCallId=event.call_id, toolName=event.name,
                                 input=event.arguments))
            case ToolFinished():
                self.after_tools = True
                if event.ok:
                    # Only whether the tool worked: its raw result is for the model (as on the SSE stream).
                    out.append(_part("tool-output-available", toolCallId=event.call_id, output={"ok": True}))
                else:
                    out.append(_part("tool-output-error", toolCallId=event.call_id, errorText="The tool failed."))
            case InputRequired(kind="approval"):  # a client tool's call waits with its input alone
                out.append(_part("tool-approval-request", approvalId=event.call_id, toolCallId=event.call_id))
            case Handoff():  # a person has the session: a data part (``data-*``, the AI SDK's own)
                self._close_text(out)
                out.append(_part("data-handoff", data={"mode": event.mode, "reason": event.reason,
                                                       "summary": event.summary}))
            case TurnCompleted():
                if not self.texts and event.message:
                    self._text(out, event.message)
                self._close_text(out)
                reason = "tool-calls" if event.status == "waiting" else "stop"
                metadata = {"turnId": self.turn_id}
                if event.status != "completed":
                    metadata["status"] = event.status
                out += [_part("finish-step"), _part("finish", finishReason=reason, messageMetadata=metadata), _DONE]
            case TurnFailed():
                self._close_text(out)
                out += [_part("error", errorText=f"{event.error}: {event.message}"), _DONE]


async def _stream(request: web.Request, record: TurnView) -> web.StreamResponse:
    async with open_stream(request, record, STREAM_HEADER, sep="\n") as resp:
        await relay(record, resp, AiSdkTranslator(record))
    return resp


async def chat(request: web.Request) -> web.StreamResponse:
    """Chat with the AI SDK's UI message stream protocol (`useChat` with `DefaultChatTransport`).
    ---
    summary: AI SDK chat (UI message stream)
    description: |
      The body is what the AI SDK's `DefaultChatTransport` sends: `id` (the session id),
      `messages` (UI messages with `parts`), `trigger` and `messageId`. The new turn is the text
      parts of the **last user message**; the server keeps the conversation, so earlier messages
      are not read (`regenerate-message` sends that last user message again as a new turn).
      The tenant is the `X-Tenant-ID` header (else `default`).

      The answer is the UI message stream (`x-vercel-ai-ui-message-stream: v1`): `start`
      (`messageMetadata.turnId` names the turn), `start-step`, `text-start`/`text-delta`/`text-end`,
      `tool-input-available` and `tool-output-available` (output `{"ok": true}`) or
      `tool-output-error` per tool call, `finish-step` between model rounds, then `finish` or
      `error`, then `data: [DONE]`. While a person holds the session the message is kept for
      them: a `data-handoff` part (`data`: mode, reason, summary) and `finish` with
      `messageMetadata.status: with_human`.

      Approvals (TOOL_APPROVAL): a call that waits streams `tool-input-available` then
      `tool-approval-request` (`approvalId` = the call id) and the message finishes
      (`finishReason: tool-calls`); the next request, whose last UI message carries the tool part
      in state `approval-responded` (`addToolApprovalResponse`), continues the turn in its
      response. Client tools come in the body's `tools` (`[{name, description, parameters}]`,
      as for `POST /api/v1/chat`); their calls stream as `tool-input-available` and finish the
      message; a next request carrying the part in `output-available` (`addToolOutput`)
      continues.
    tags: [front ends]
    parameters:
      - {in: header, name: X-Tenant-ID, required: false, schema: {$ref: "#/components/schemas/Id"}}
    requestBody:
      required: true
      content:
        application/json:
          schema: {$ref: "#/components/schemas/AiSdkChatRequest"}
          example: {id: abc-123, messages: [{id: m1, role: user, parts: [{type: text, text: "Show my recent orders"}]}],
                    trigger: submit-message}
    responses:
      "200":
        description: The UI message stream.
        headers:
          x-vercel-ai-ui-message-stream: {schema: {type: string, enum: [v1]}}
          X-Turn-ID: {description: The turn's id., schema: {type: string}}
        content:
          text/event-stream:
            schema: {$ref: "#/components/schemas/AiSdkFrame"}
            example: |
              data: {"type": "start", "messageId": "msg-t1", "messageMetadata": {"turnId": "t1"}}

              data: {"type": "start-step"}

              data: {"type": "text-start", "id": "t1-t1"}

              data: {"type": "text-delta", "id": "t1-t1", "delta": "Hello"}

              data: {"type": "text-end", "id": "t1-t1"}

              data: {"type": "finish-step"}

              data: {"type": "finish", "finishReason": "stop", "messageMetadata": {"turnId": "t1"}}

              data: [DONE]
      "409": {$ref: "#/components/responses/TurnStopped"}
      "429": {$ref: "#/components/responses/TenantBusy"}
      "503": {$ref: "#/components/responses/Unavailable"}
    """
    body = await json_object(request)
    session_id, message = parse_chat(body, request.app[SETTINGS].max_message_chars)
    tenant_id = request_tenant(request)
    raw_tools = body.get("tools")  # the registry's names only for a request that declares tools
    tools = client_tools(raw_tools, request.app[REGISTRY].tools()) if raw_tools is not None else ()
    counted = request.get(TENANT_COUNTED, False)
    answers = ui_answers(body["messages"], await request.app[PENDING].get(tenant_id, session_id))
    found = None
    for call_id, decision in answers:  # the step's last decision starts its continuation
        found = (await apply_decision(request.app, tenant_id, session_id, call_id, decision, counted=counted,
                                             role=caller_role(request)))[1]
    if answers and found is None:
        raise ApiError(409, "input_required", "Other calls of this step still wait: answer every one of them.")
    record = found or await start_turn(request.app, tenant_id, session_id, message, stream=True, counted=counted,
                                       tools=tools)
    return await _stream(request, record)


async def resume(request: web.Request) -> web.StreamResponse:
    """Resume the session's running answer (`useChat({resume: true})`).
    ---
    summary: AI SDK chat resume
    description: |
      Streams the session's running turn (or, when none runs yet, the next queued one) from its
      start, in the same parts as `POST /api/v1/ai-sdk/chat`; answers 204 when the session has
      no open turn. With `SESSION_STORE=redis` any instance finds the turn, whichever instance
      runs it. The tenant is the `X-Tenant-ID` header (else `default`): another tenant's session
      looks like one with no open turn.
    tags: [front ends]
    parameters:
      - {in: path, name: id, required: true, schema: {$ref: "#/components/schemas/Id"}}
      - {in: header, name: X-Tenant-ID, required: false, schema: {$ref: "#/components/schemas/Id"}}
    responses:
      "200":
        description: The UI message stream of the running turn.
        content:
          text/event-stream:
            schema: {$ref: "#/components/schemas/AiSdkFrame"}
      "204": {description: No turn of this session is running.}
      "503": {$ref: "#/components/responses/Unavailable"}
    """
    session_id = check_id(request.match_info["id"], "id")
    tenant_id = request_tenant(request)
    record = await request.app[COORDINATION].session_turn(tenant_id, session_id)
    if record is None:
        return web.Response(status=204)
    return await _stream(request, record)
