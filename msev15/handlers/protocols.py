"""What the protocol adapters (AG-UI, AI SDK UI stream) share: the caller's tenant, the event
stream response, and following a turn's log.

The adapters never run turns: they start one through :func:`msev15.handlers.chat.start_turn`
and translate the events of its record in the turn log, so a turn started here is the same turn
the REST and SSE endpoints see (history, status, resume, cancel).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

from aiohttp import web
from aiohttp_sse import sse_response

from msev15 import keys
from msev15.events.turnlog import TurnView
from msev15.events.types import TurnEvent
from msev15.handlers import tenancy
from msev15.handlers.chat import TURN_ID_HEADER
from msev15.handlers.streams import SEND_TIMEOUT_SECONDS, TurnStream
from msev15.handlers.validation import MESSAGE_PATTERN, invalid

TENANT_HEADER = "X-Tenant-ID"


def request_tenant(request: web.Request, fallback: Any = None) -> str:
    """The caller's tenant: the ``X-Tenant-ID`` header, else ``fallback`` (a body field such as
    AG-UI's ``forwardedProps.tenant_id``), else ``default``; a bad one is a 400. With
    authentication on, the credential's tenant, which a header or field must agree with (403)."""
    header = request.headers.get(TENANT_HEADER)
    if header is not None:
        return tenancy.request_tenant(request, header, claimed_in=f"{TENANT_HEADER} header")
    return tenancy.request_tenant(request, fallback)


def field_of(body: Mapping[str, Any], name: str, kind: type[str | list[Any] | dict[str, Any]],
             what: str, required: bool = False) -> Any:
    """``body[name]`` if it has the right JSON type (None when absent and optional); else a 400."""
    if name not in body or body[name] is None:
        if required:
            raise invalid(f"{name} is required", name)
        return None
    value = body[name]
    if not isinstance(value, kind):
        raise invalid(f"{name} must be {what}", name)
    return value


def open_event_stream(request: web.Request, record: TurnView,
                      headers: Mapping[str, str] | None = None) -> TurnStream:
    """An SSE response (not yet prepared) for a protocol stream: ``\\n`` line ends, since some
    clients split events on a blank ``\\n\\n`` only; keep-alive comments; the turn id header."""
    ping = request.app[keys.SETTINGS].sse_ping_seconds
    return sse_response(request, allow_all_methods=True, ping_interval=ping, sep="\n",  # type: ignore[return-value]
                        headers={TURN_ID_HEADER: record.turn_id, **(headers or {})},
                        send_timeout=SEND_TIMEOUT_SECONDS, response_cls=TurnStream)


async def follow(record: TurnView, after: int = 0) -> AsyncIterator[list[TurnEvent]]:
    """The turn's events past seq ``after``, in batches as they arrive, up to its terminal event."""
    seq = after
    while True:
        await record.wait(seq)
        events = record.events
        end = len(events)
        if end > seq:
            batch, seq = events[seq:end], end
            yield batch
        if record.finished and seq >= len(record.events):
            return


_ID_REF = {"$ref": "#/components/schemas/Id"}
_TYPES = ("RUN_STARTED", "TEXT_MESSAGE_START", "TEXT_MESSAGE_CONTENT", "TEXT_MESSAGE_END", "TOOL_CALL_START",
          "TOOL_CALL_ARGS", "TOOL_CALL_END", "TOOL_CALL_RESULT", "RUN_FINISHED", "RUN_ERROR")
_PARTS = ("start", "start-step", "text-start", "text-delta", "text-end", "tool-input-available",
          "tool-output-available", "tool-output-error", "finish-step", "finish", "error")

# A user message's text: what the ChatRequest's message allows (MAX_MESSAGE_CHARS by default).
_TEXT = {"type": "string", "minLength": 1, "maxLength": 16000, "pattern": MESSAGE_PATTERN}


def _frame(description: str, pattern: str) -> dict[str, Any]:
    """One SSE message of a protocol stream (as schemathesis and the docs read a stream)."""
    return {"type": "object", "required": ["data"], "description": description,
            "properties": {"data": {"type": "string", "pattern": pattern}}}


# OpenAPI schemas of the two protocol endpoints (merged into /openapi.json by handlers/openapi_spec.py).
SCHEMAS: dict[str, dict[str, Any]] = {
    "RunAgentInput": {
        "type": "object",
        "required": ["threadId", "runId", "messages"],
        "description": "AG-UI's RunAgentInput. Only the last `user` message is read; `tools` are ignored.",
        "properties": {
            "threadId": {**_ID_REF},
            "runId": {"type": "string", "minLength": 1, "maxLength": 128, "pattern": "^[\\x21-\\x7e]+$"},
            "messages": {"type": "array", "minItems": 1, "items": {
                "type": "object", "required": ["role", "content"],
                "properties": {"id": {"type": "string"}, "role": {"type": "string", "enum": ["user"]},
                               "content": _TEXT}}},
            "tools": {"type": "array", "items": {"type": "object"}},
            "context": {"type": "array", "items": {"type": "object"}},
            "state": {},
            "forwardedProps": {"type": "object", "properties": {"tenant_id": _ID_REF}},
        },
    },
    "AgUiEvent": {
        "type": "object", "required": ["type"],
        "description": "One AG-UI event on a `data:` line (camelCase fields, as the protocol's types).",
        "properties": {"type": {"type": "string", "enum": list(_TYPES)}, "threadId": {"type": "string"},
                       "runId": {"type": "string"}, "messageId": {"type": "string"}, "delta": {"type": "string"},
                       "toolCallId": {"type": "string"}, "toolCallName": {"type": "string"},
                       "content": {"type": "string"}, "message": {"type": "string"}, "code": {"type": "string"}},
    },
    "AgUiFrame": _frame("One SSE message: a `data:` line holding a `#/components/schemas/AgUiEvent`.",
                        '^[{]"type": "(' + "|".join(_TYPES) + ')"'),
    "AiSdkFrame": _frame("One SSE message: a `data:` line holding a `#/components/schemas/AiSdkPart`, "
                         "or the last one, `[DONE]`.", '^([{]"type": "(' + "|".join(_PARTS) + r')"|\[DONE\]$)'),
    "AiSdkChatRequest": {
        "type": "object",
        "required": ["id", "messages"],
        "description": "What the AI SDK's DefaultChatTransport sends. Only the last user message is read.",
        "properties": {
            "id": {**_ID_REF},
            "messages": {"type": "array", "minItems": 1, "items": {
                "type": "object", "required": ["role", "parts"],
                "properties": {"id": {"type": "string"}, "role": {"type": "string", "enum": ["user"]},
                               "parts": {"type": "array", "minItems": 1, "maxItems": 1, "items": {
                                   "type": "object", "required": ["type", "text"],
                                   "properties": {"type": {"type": "string", "enum": ["text"]},
                                                  "text": _TEXT}}}}}},
            "trigger": {"type": "string", "enum": ["submit-message", "regenerate-message"]},
            "messageId": {"type": "string"},
        },
    },
    "AiSdkPart": {
        "type": "object", "required": ["type"],
        "description": "One UI message stream part on a `data:` line; the stream ends with `data: [DONE]`.",
        "properties": {"type": {"type": "string", "enum": list(_PARTS)}, "id": {"type": "string"},
                       "delta": {"type": "string"}, "toolCallId": {"type": "string"}, "toolName": {"type": "string"},
                       "input": {}, "output": {}, "errorText": {"type": "string"}},
    },
}
