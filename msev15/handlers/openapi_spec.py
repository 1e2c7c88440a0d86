"""The OpenAPI document's data: schemas, shared responses, security schemes, and
:func:`build_spec`, which reads each route's operation from its handler's docstring (apispec's
YAML after ``---``) and adds the errors that shared mechanisms answer everywhere.

Kept apart from the handlers that serve the document (handlers/docs.py): this module is data
and one pure function of the routes and the settings.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

from aiohttp import web
from apispec import APISpec
from apispec.yaml_utils import load_yaml_from_docstring

from msev15 import __version__
from msev15.common.tenancy import ID_PATTERN
from msev15.config import Settings
from msev15.handlers.agent_schemas import AGENT_SCHEMAS
from msev15.handlers.approvals_openapi import extend as extend_for_approvals
from msev15.handlers.auth import AGENT_PATHS
from msev15.handlers.feedback_schemas import SCHEMAS as FEEDBACK_SCHEMAS
from msev15.handlers.handoff_docs import HANDOFF_RESPONSES, HANDOFF_SCHEMAS
from msev15.handlers.profile_docs import PROFILE_RESPONSES, PROFILE_SCHEMAS
from msev15.handlers.protocols import SCHEMAS as PROTOCOL_SCHEMAS
from msev15.handlers.validation import MESSAGE_PATTERN

_ID = {"type": "string", "pattern": ID_PATTERN, "maxLength": 128, "example": "abc-123"}
_TS = {"type": "string", "format": "date-time", "example": "2026-02-19T10:30:00Z"}


def _event(kind: str, required: dict[str, Any], optional: dict[str, Any] | None = None) -> dict[str, Any]:
    """One stream event (as sent by ``events.types.to_wire``): ``type``, its fields, ``session_id``."""
    fields = {"type": {"type": "string", "enum": [kind]}, **required, "session_id": {"type": "string"}}
    return {"type": "object", "required": list(fields), "properties": {**fields, **(optional or {})}}


_PROFILE_VERSION = {"type": "integer", "minimum": 0,
                    "description": "The tenant's agent profile version the turn ran with (0: the service's defaults)."}

_SCHEMAS: dict[str, dict[str, Any]] = {
    "Id": _ID,
    "ChatRequest": {
        "type": "object",
        "required": ["session_id", "message"],
        "additionalProperties": False,
        "properties": {
            "session_id": _ID,
            "message": {"type": "string", "minLength": 1, "maxLength": 16000,  # MAX_MESSAGE_CHARS, set per app
                        "pattern": MESSAGE_PATTERN,
                        "description": "Not blank; Unicode text without NUL characters. "
                                       "The limit is MAX_MESSAGE_CHARS."},
            "tenant_id": {**_ID, "description": "AUTH_MODE=none: the tenant, \"default\" when left out (null is "
                                                "refused; a tenant_id in the query must agree). With a credential: "
                                                "leave it out or send the credential's own tenant (else 403)."},
            "if_busy": {"type": "string", "enum": ["enqueue", "reject", "interrupt"], "default": "enqueue",
                        "description": "When the session is still answering: queue this message (default), "
                                       "refuse it (409 session_busy), or stop the running and queued turns "
                                       "(they end with error `interrupted`) and run this one."},
        },
    },
    "ChatResponse": {
        "type": "object",
        "required": ["session_id", "message", "timestamp", "message_count", "tenant_id"],
        "properties": {"session_id": _ID, "message": {"type": "string", "nullable": True,
                                                      "description": "null while a person holds the session."},
                       "timestamp": _TS, "message_count": {"type": "integer"}, "tenant_id": _ID,
                       "turn_id": {"type": "string", "description": "The turn's id (status, events)."},
                       "profile_version": _PROFILE_VERSION,
                       "status": {"type": "string", "enum": ["with_human"],
                                  "description": "A person holds the session: the message was stored for them, "
                                                 "no turn ran."},
                       "mode": {"$ref": "#/components/schemas/Mode"}},
    },
    "Greeting": {
        "type": "object",
        "required": ["tenant_id", "greeting", "profile_version"],
        "properties": {"tenant_id": _ID, "greeting": {"type": "string", "nullable": True},
                       "profile_version": _PROFILE_VERSION},
    },
    "TurnStatus": {
        "type": "object",
        "required": ["turn_id", "session_id", "tenant_id", "status", "last_seq"],
        "properties": {"turn_id": {"type": "string"}, "session_id": _ID, "tenant_id": _ID,
                       "status": {"type": "string", "enum": ["queued", "running", "completed", "failed", "cancelled",
                                                             "interrupted"]},
                       "last_seq": {"type": "integer", "description": "Seq of the turn's latest event (0: none yet)."},
                       "message_count": {"type": "integer", "description": "Visible messages after a completed turn."},
                       "error": {"type": "string", "description": "The error code of a turn that did not complete."},
                       "profile_version": _PROFILE_VERSION},
    },
    "Cancelling": {"type": "object", "required": ["turn_id", "status"],
                   "properties": {"turn_id": {"type": "string"}, "status": {"type": "string", "enum": ["cancelling"]}}},
    "SessionCancelled": {"type": "object", "required": ["session_id", "cancelled"],
                         "properties": {"session_id": _ID, "cancelled": {"type": "integer"}}},
    "SseFrame": {
        "description": "One Server-Sent Event: `id: {turn_id}:{seq}` (seq 1, 2, 3, ... in the turn), then one "
                       "`data:` line holding a `#/components/schemas/StreamEvent` (`type` first). Keep-alive "
                       "comments (`: ping`) carry no id. Send the last id back as `Last-Event-ID` to resume.",
        "type": "object",
        "required": ["id", "data"],
        "properties": {"id": {"type": "string", "pattern": "^[^:]+:[0-9]+$", "example": "t1:3"},
                       "data": {"type": "string",
                                "pattern": '^[{]"type": "(token|tool_call|tool_result|handoff|done|error)"'}},
    },
    "Error": {
        "type": "object",
        "required": ["error", "message", "request_id", "timestamp"],
        "properties": {
            "error": {"type": "string", "example": "validation_error"},
            "message": {"type": "string", "example": "session_id is required"},
            "detail": {"type": "string"},
            "field": {"type": "string"},
            "required_role": {"type": "string", "enum": ["customer", "operator", "admin"]},
            "claimed_by": {"type": "string"},
            "session_id": {"type": "string"},
            "retry_after": {"type": "integer"},
            "turn_id": {"type": "string"},
            "turn_status": {"type": "string"},
            "request_id": {"type": "string"},
            "timestamp": _TS,
        },
    },
    "Message": {
        "type": "object",
        "required": ["role", "content", "timestamp"],
        "properties": {"role": {"type": "string", "enum": ["user", "assistant"]},
                       "content": {"type": "string"}, "timestamp": _TS,
                       "author": {"$ref": "#/components/schemas/HumanAuthor"}},
    },
    "History": {
        "type": "object",
        "required": ["session_id", "tenant_id", "message_count", "created_at", "last_activity", "messages"],
        "properties": {"session_id": _ID, "tenant_id": _ID, "message_count": {"type": "integer"},
                       "created_at": _TS, "last_activity": _TS, "mode": {"$ref": "#/components/schemas/Mode"},
                       "messages": {"type": "array", "items": {"$ref": "#/components/schemas/Message"}}},
    },
    "Deleted": {
        "type": "object",
        "required": ["message", "session_id", "messages_deleted"],
        "properties": {"message": {"type": "string"}, "session_id": _ID, "messages_deleted": {"type": "integer"}},
    },
    "SessionSummary": {
        "type": "object",
        "required": ["session_id", "message_count", "created_at", "last_activity"],
        "properties": {"session_id": _ID, "message_count": {"type": "integer"}, "created_at": _TS,
                       "last_activity": _TS, "mode": {"$ref": "#/components/schemas/Mode"}},
    },
    "SessionList": {
        "type": "object",
        "required": ["tenant_id", "total", "limit", "offset", "sessions"],
        "properties": {"tenant_id": _ID, "total": {"type": "integer"}, "limit": {"type": "integer"},
                       "offset": {"type": "integer"},
                       "sessions": {"type": "array", "items": {"$ref": "#/components/schemas/SessionSummary"}}},
    },
    "Health": {"type": "object", "required": ["status", "timestamp"],
               "properties": {"status": {"type": "string", "enum": ["healthy"]}, "timestamp": _TS}},
    "Liveness": {"type": "object", "required": ["status", "uptime_seconds"],
                 "properties": {"status": {"type": "string", "enum": ["alive"]},
                                "uptime_seconds": {"type": "integer"}}},
    # The JSON object in the `data:` line of each Server-Sent Event of /api/v1/chat/stream.
    "StreamEvent": {
        "oneOf": [{"$ref": f"#/components/schemas/{n}"}
                  for n in ("TokenEvent", "ToolCallEvent", "ToolResultEvent", "HandoffEvent", "DoneEvent",
                            "ErrorEvent")],
        "discriminator": {"propertyName": "type", "mapping": {
            "token": "#/components/schemas/TokenEvent", "tool_call": "#/components/schemas/ToolCallEvent",
            "tool_result": "#/components/schemas/ToolResultEvent", "done": "#/components/schemas/DoneEvent",
            "handoff": "#/components/schemas/HandoffEvent",
            "error": "#/components/schemas/ErrorEvent"}},
    },
    "TokenEvent": _event("token", {"content": {"type": "string"}}),
    "ToolCallEvent": _event("tool_call", {"name": {"type": "string"}, "call_id": {"type": "string"}, "arguments": {}}),
    "ToolResultEvent": _event("tool_result", {"name": {"type": "string"}, "call_id": {"type": "string"},
                                              "ok": {"type": "boolean"}}),
    "DoneEvent": _event("done", {"message_count": {"type": "integer"}},
                        {"turn_id": {"type": "string", "description": "The turn's id (status, resume)."},
                         "usage": {"type": "object", "additionalProperties": {"type": "integer"}},
                         "profile_version": _PROFILE_VERSION,
                         "status": {"type": "string", "enum": ["with_human"],
                                    "description": "The session is a person's: the turn handed it over, or the "
                                                   "message was stored for them."}}),
    # --- human handoff -----------------------------------------------------------------------------
    "Mode": {"type": "string", "enum": ["agent", "waiting_for_human", "human"],
             "description": "Who answers the session: the agent, nobody yet (a person was asked for), a person."},
    "HumanAuthor": {"type": "object", "required": ["type", "id", "name"],
                    "description": "On a message a person (an operator) wrote.",
                    "properties": {"type": {"type": "string", "enum": ["human"]}, "id": {"type": "string"},
                                   "name": {"type": "string"}}},
    "HandoffEvent": _event("handoff", {"mode": {"$ref": "#/components/schemas/Mode"}},
                           {"reason": {"type": "string", "description": "Why the agent asked for a person."},
                            "summary": {"type": "string", "description": "The agent's summary for the operator."}}),
    "ErrorEvent": _event("error", {"error": {"type": "string", "description":
                                             "cancelled, interrupted, shutting_down, llm_error, ..."},
                                   "message": {"type": "string"}, "request_id": {"type": "string"},
                                   "turn_id": {"type": "string"}},
                        {"detail": {"type": "string", "description": "For a model failure: what the model "
                                    "endpoint said and which setting to check."}}),
    "Readiness": {
        "type": "object",
        "required": ["status", "checks", "warnings"],
        "properties": {"status": {"type": "string", "enum": ["ready", "not_ready"]},
                       "checks": {"type": "object", "additionalProperties": {"type": "string"}, "properties": {
                           "model": {"type": "object", "required": ["status", "provider", "endpoint"],
                                     "description": "The model endpoint: its status (healthy, unreachable, "
                                                    "rejected, no_credential, not_configured, offline, checking), "
                                                    "the provider in use and the URL called (empty offline).",
                                     "properties": {"status": {"type": "string"}, "provider": {"type": "string"},
                                                    "endpoint": {"type": "string"}}}}},
                       "warnings": {"type": "array", "items": {"type": "string"}}},
    },
}


def _error_response(description: str, example: dict[str, Any]) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"},
                                             "example": {**example, "request_id": "6f1c0e2a9b8d4c7e",
                                                         "timestamp": "2026-02-19T10:30:00Z"}}}}


_RESPONSES = {
    "BadRequest": _error_response("Invalid input.", {"error": "validation_error", "message": "session_id is required",
                                                     "field": "session_id"}),
    "SessionNotFound": _error_response("Unknown session (in this tenant).", {
        "error": "Session not found", "message": "No session 'abc-123-def' exists for this tenant.",
        "session_id": "abc-123-def"}),
    "TooLarge": _error_response("Body over MAX_BODY_BYTES.", {"error": "payload_too_large",
                                                              "message": "The request body is too large."}),
    "RequestTimeout": _error_response("The body did not arrive in time (slow client).", {
        "error": "request_timeout", "message": "The request body did not arrive within 10 seconds."}),  # the default
    "UnsupportedMediaType": _error_response("Body is not UTF-8 application/json.", {
        "error": "unsupported_media_type", "message": "Send the body as application/json."}),
    "RateLimited": _error_response("Rate limit exceeded.", {
        "error": "Rate limit exceeded", "message": "Maximum 100 requests per minute per IP address",
        "retry_after": 30}),
    "ServerError": _error_response("Unexpected error.", {"error": "internal_error",
                                                         "message": "An unexpected error occurred."}),
    "ModelError": _error_response("The language model failed.", {
        "error": "llm_error", "message": "The language model returned an error (HTTP 500)."}),
    "TurnNotFound": _error_response("Unknown turn in this session and tenant, or no longer retained.", {
        "error": "turn_not_found", "message": "No such turn in this session, or its events are no longer kept."}),
    "TurnFinished": _error_response("The turn has already ended.", {
        "error": "turn_finished", "message": "The turn has already ended (completed).", "turn_id": "t1",
        "turn_status": "completed"}),
    "TurnStopped": _error_response(
        "The turn was cancelled, interrupted by a newer message (if_busy: interrupt), or the session was busy "
        "(if_busy: reject, with Retry-After).", {
            "error": "cancelled", "message": "The turn was cancelled before it finished."}),
    "TenantBusy": _error_response("Too many turns of this tenant are waiting (Retry-After says when to retry).", {
        "error": "tenant_busy", "message": "Too many messages are waiting for this tenant; retry shortly."}),
    "Unauthorized": {**_error_response(
        "Missing, malformed, unknown, revoked or expired credential (AUTH_MODE api_key or jwt).", {
            "error": "unauthorized", "message": "Missing or invalid credentials."}),
        "headers": {"WWW-Authenticate": {"schema": {"type": "string", "example": 'Bearer realm="msev15"'}}}},
    "TenantMismatch": _error_response("The tenant_id sent names another tenant than the credential's.", {
        "error": "tenant_mismatch", "message": "The credential belongs to another tenant than the tenant_id sent.",
        "field": "tenant_id"}),
    "Unavailable": _error_response("Shutting down, or the model is unreachable.", {
        "error": "shutting_down", "message": "The service is shutting down and accepts no new messages."}),
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/responses/{name}"}


def _add_security(path: str, operation: dict[str, Any], settings: Settings) -> None:
    """Under AUTH_MODE api_key or jwt every /api/, /a2a and /mcp operation takes one of the two
    schemes (the auth middleware covers them all); under none nothing is required or declared."""
    if settings.auth_mode == "none" or not (path.startswith("/api/") or path in AGENT_PATHS):
        return
    operation["security"] = [{"ApiKey": []}, {"Bearer": []}]
    responses = operation.setdefault("responses", {})
    responses.setdefault("401", _ref("Unauthorized"))
    if path != "/a2a":  # A2A answers a tenant mismatch as a JSON-RPC error (invalid params)
        responses.setdefault("403", _ref("TenantMismatch"))


def _add_shared_errors(path: str, operation: dict[str, Any]) -> None:
    """The errors that come from shared mechanisms, documented once instead of per handler:
    the error middleware (500, anywhere), validation and the rate limiter (every API route),
    and body reading (every operation that takes a body)."""
    responses = operation.setdefault("responses", {})
    shared = {"500": "ServerError"}
    if path.startswith("/api/"):
        shared |= {"400": "BadRequest", "429": "RateLimited"}
    if "requestBody" in operation:
        shared |= {"408": "RequestTimeout", "413": "TooLarge", "415": "UnsupportedMediaType"}
    for status, name in shared.items():
        responses.setdefault(status, _ref(name))


def build_spec(routes: Iterable[web.AbstractRoute], settings: Settings) -> dict[str, Any]:
    """The OpenAPI 3.0 document of ``routes`` (those whose handler documents an operation)."""
    spec = APISpec(
        title="MSEv15E2E Customer Service API",
        version=__version__,
        openapi_version="3.0.3",
        info={"description": "REST + Server-Sent Events API of CustomerServiceAgent. "
                             "Every error uses the same envelope; every response carries X-Request-ID.",
              "license": {"name": "MIT"}},
        servers=[{"url": "/"}],
    )
    schemas = copy.deepcopy({**_SCHEMAS, **PROTOCOL_SCHEMAS, **FEEDBACK_SCHEMAS, **AGENT_SCHEMAS, **HANDOFF_SCHEMAS,
                             **PROFILE_SCHEMAS})
    schemas["ChatRequest"]["properties"]["message"]["maxLength"] = settings.max_message_chars
    schemas["OperatorMessage"]["properties"]["content"]["maxLength"] = settings.max_message_chars
    schemas["Release"]["properties"]["note"]["maxLength"] = settings.max_message_chars
    extend_for_approvals(schemas)  # turns that wait: kept in their own module
    for name, schema in schemas.items():
        spec.components.schema(name, schema)
    for name, response in {**_RESPONSES, **HANDOFF_RESPONSES, **PROFILE_RESPONSES}.items():
        spec.components.response(name, response)
    spec.components.security_scheme("ApiKey", {
        "type": "apiKey", "in": "header", "name": "X-API-Key",
        "description": "An API key (msev15 keys create), when AUTH_MODE=api_key. It names the tenant."})
    spec.components.security_scheme("Bearer", {
        "type": "http", "scheme": "bearer",
        "description": "An API key (AUTH_MODE=api_key) or a JWT signed by the configured issuer (AUTH_MODE=jwt); "
                       "the credential names the tenant. Not required when AUTH_MODE=none."})
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        if route.method in ("HEAD", "OPTIONS", "*") or route.resource is None:
            continue
        info = route.resource.get_info()
        path = info.get("path") or info.get("formatter")
        operation = load_yaml_from_docstring(route.handler.__doc__ or "")
        if path and operation:
            _add_shared_errors(path, operation)
            _add_security(path, operation, settings)
            paths.setdefault(path, {})[route.method.lower()] = operation
    for path, operations in sorted(paths.items()):
        spec.path(path=path, operations=operations)
    return spec.to_dict()
