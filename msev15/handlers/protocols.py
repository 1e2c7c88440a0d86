"""What the protocol adapters (AG-UI, AI SDK UI stream) share besides the one relay: the
caller's tenant, typed body fields, and their OpenAPI schemas.

The adapters never run turns: they start one through :func:`msev15.handlers.chat.start_turn`
and give :func:`msev15.handlers.streams.relay` a translator for its events, so a turn started
here is the same turn the REST and SSE endpoints see (history, status, resume, cancel).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from msev15.handlers import tenancy
from msev15.handlers.validation import check_tenant_id, invalid

TENANT_HEADER = "X-Tenant-ID"


def request_tenant(request: web.Request, fallback: Any = None) -> str:
    """The caller's tenant: the ``X-Tenant-ID`` header, else ``fallback`` (a body field such as
    AG-UI's ``forwardedProps.tenant_id``), else ``default``; a bad one is a 400. With
    authentication on, the credential's tenant, which a header or field must agree with (403)."""
    header = request.headers.get(TENANT_HEADER)
    if header is None:
        return tenancy.request_tenant(request, fallback)
    if fallback is not None:  # both named: each must be valid, and they must agree (as REST's query and body)
        in_body = check_tenant_id(fallback)
        if in_body != check_tenant_id(header):
            raise invalid(f"{TENANT_HEADER} and the body's tenant_id differ; send it once or send the same value",
                          "tenant_id")
    return tenancy.request_tenant(request, header, claimed_in=f"{TENANT_HEADER} header")


def messages_of(body: Mapping[str, Any], roles: tuple[str, ...]) -> list[dict[str, Any]]:
    """``body["messages"]``: a non-empty array of objects, each with one of ``roles`` and, when
    it has an ``id``, a string id (as the schema says); else a 400."""
    messages: list[dict[str, Any]] = field_of(body, "messages", list, "an array of messages", required=True)
    for message in messages:
        if not isinstance(message, dict) or message.get("role") not in roles:
            raise invalid(f"messages must be objects whose role is one of: {', '.join(roles)}", "messages")
        if "id" in message and not isinstance(message["id"], str):
            raise invalid("a message's id must be a string", "messages")
    return messages


def field_of(body: Mapping[str, Any], name: str, kind: type[str | list[Any] | dict[str, Any]],
             what: str, required: bool = False) -> Any:
    """``body[name]`` if it has the right JSON type (None when absent and optional); else a 400."""
    if name not in body:
        if required:
            raise invalid(f"{name} is required", name)
        return None
    if body[name] is None:  # null is not "absent": the schema allows neither null nor a default for it
        raise invalid(f"{name} must be {what}, not null (leave it out)", name)
    value = body[name]
    if not isinstance(value, kind):
        raise invalid(f"{name} must be {what}", name)
    return value


_ID_REF = {"$ref": "#/components/schemas/Id"}
_TYPES = ("RUN_STARTED", "TEXT_MESSAGE_START", "TEXT_MESSAGE_CONTENT", "TEXT_MESSAGE_END", "TOOL_CALL_START",
          "TOOL_CALL_ARGS", "TOOL_CALL_END", "TOOL_CALL_RESULT", "RUN_FINISHED", "RUN_ERROR")
_PARTS = ("start", "start-step", "text-start", "text-delta", "text-end", "tool-input-available",
          "tool-output-available", "tool-output-error", "finish-step", "finish", "error")

# The roles each protocol's messages may have, and the AI SDK's UI message part types.
AGUI_ROLES = ("developer", "system", "assistant", "user", "tool", "activity")
AISDK_ROLES = ("system", "user", "assistant")
AISDK_PART_TYPE = "^(text|reasoning|file|source-url|source-document|step-start|dynamic-tool|tool-.+|data-.+)$"
# What OpenAPI 3.0 cannot say in a schema (it has no "contains"), said in words.
_LAST_USER = ("The client's copy of the conversation. It must hold a `user` message: the last one is the new turn, "
              "and its text must be what `ChatRequest.message` allows (not blank, within MAX_MESSAGE_CHARS, no "
              "NUL). Earlier messages are checked for their shape only; the server's history is authoritative.")


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
            "messages": {"type": "array", "minItems": 1, "description": _LAST_USER, "items": {
                "type": "object", "required": ["role"],
                "properties": {"id": {"type": "string"}, "role": {"type": "string", "enum": list(AGUI_ROLES)},
                               "content": {"description": "The last user message's: text (as `ChatRequest.message`)"
                                                          " or an array of parts whose `text` parts are joined."}}}},
            "tools": {"type": "array", "items": {"type": "object"}},
            "context": {"type": "array", "items": {"type": "object"}},
            "state": {},
            "forwardedProps": {"type": "object", "properties": {"tenant_id": {
                **_ID_REF, "description": "The tenant when no X-Tenant-ID header is sent; with the header "
                                          "both must be valid and equal (else 400)."}}},
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
            "messages": {"type": "array", "minItems": 1, "description": _LAST_USER, "items": {
                "type": "object", "required": ["role", "parts"],
                "properties": {"id": {"type": "string"}, "role": {"type": "string", "enum": list(AISDK_ROLES)},
                               "parts": {"type": "array", "items": {
                                   "type": "object", "required": ["type"],
                                   "properties": {"type": {"type": "string", "pattern": AISDK_PART_TYPE},
                                                  "text": {"type": "string"}}}}}}},
            "trigger": {"type": "string", "enum": ["submit-message", "regenerate-message"]},
            "messageId": {"type": "string", "nullable": True,
                          "description": "The message to regenerate; null or left out when there is none."},
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
