"""OpenAPI schemas of turns that wait (issue 23): pending calls, decisions, and the stream's
``input_required`` event. Kept apart from the rest of the API's schemas so both can change
independently; the docs module merges them."""

from __future__ import annotations

from typing import Any

_KIND = {"type": "string", "enum": ["approval", "client_tool"],
         "description": "approval: a person approves or rejects the call; client_tool: the client runs it "
                        "and sends its output."}
_TS = {"type": "string", "format": "date-time", "example": "2026-02-19T10:30:00Z"}

SCHEMAS: dict[str, dict[str, Any]] = {
    "PendingCall": {
        "type": "object",
        "required": ["kind", "call_id", "name", "arguments", "turn_id", "requested_at", "expires_at"],
        "properties": {"kind": _KIND, "call_id": {"type": "string"}, "name": {"type": "string"},
                       "arguments": {"description": "The call's arguments as the model wrote them."},
                       "turn_id": {"type": "string", "description": "The paused turn."},
                       "requested_at": _TS,
                       "expires_at": {**_TS, "description": "Settled as expired after this "
                                                            "(PENDING_TIMEOUT_SECONDS)."}},
    },
    "PendingCalls": {
        "type": "object", "required": ["session_id", "pending"],
        "properties": {"session_id": {"type": "string"},
                       "pending": {"type": "array", "items": {"$ref": "#/components/schemas/PendingCall"}}},
    },
    "PendingDecision": {
        "oneOf": [
            {"type": "object", "required": ["approve"], "additionalProperties": False,
             "properties": {"approve": {"type": "boolean"},
                            "reason": {"type": "string", "maxLength": 1000,
                                       "description": "Told to the model when the call is rejected."}}},
            {"type": "object", "required": ["output"], "additionalProperties": False,
             "properties": {"output": {"description": "The client tool's result: any JSON value."}}},
        ],
    },
    "PendingDecided": {
        "type": "object", "required": ["call_id", "remaining", "turn_id"],
        "properties": {"call_id": {"type": "string"},
                       "remaining": {"type": "integer", "description": "Calls of the step still waiting."},
                       "turn_id": {"type": "string", "nullable": True,
                                   "description": "The continuation turn, started by the step's last decision."}},
    },
    "InputRequiredEvent": {
        "type": "object",
        "required": ["type", "kind", "call_id", "name", "arguments", "turn_id", "session_id"],
        "properties": {"type": {"type": "string", "enum": ["input_required"]}, "kind": _KIND,
                       "call_id": {"type": "string"}, "name": {"type": "string"}, "arguments": {},
                       "turn_id": {"type": "string"}, "session_id": {"type": "string"}},
    },
    "ClientTool": {
        "type": "object", "required": ["name", "description", "parameters"], "additionalProperties": False,
        "properties": {"name": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
                       "description": {"type": "string", "maxLength": 2000},
                       "parameters": {"type": "object", "description": "A JSON Schema object."}},
    },
}


def extend(schemas: dict[str, dict[str, Any]]) -> None:
    """Add this feature's schemas, and its fields to the shared ones (stream events, the turn
    status, the chat request and reply)."""
    schemas.update(SCHEMAS)
    stream = schemas["StreamEvent"]
    stream["oneOf"].append({"$ref": "#/components/schemas/InputRequiredEvent"})
    stream["discriminator"]["mapping"]["input_required"] = "#/components/schemas/InputRequiredEvent"
    schemas["SseFrame"]["properties"]["data"]["pattern"] = (
        '^[{]"type": "(token|tool_call|tool_result|input_required|done|error)"')
    schemas["DoneEvent"]["properties"].update({
        "status": {"type": "string", "enum": ["waiting"],
                   "description": "Only when the turn paused: calls wait for a decision (see pending)."},
        "pending": {"type": "array", "items": {"type": "string"}, "description": "The waiting calls' ids."}})
    schemas["TurnStatus"]["properties"]["status"]["enum"].append("waiting")
    schemas["ChatRequest"]["properties"]["tools"] = {
        "type": "array", "maxItems": 32, "items": {"$ref": "#/components/schemas/ClientTool"},
        "description": "Client tools: offered to the model for this turn and its continuations; a call waits "
                       "for the client's output (POST /api/v1/sessions/{session_id}/pending/{call_id})."}
    schemas["ChatResponse"]["properties"].update({
        "status": {"type": "string", "enum": ["waiting"],
                   "description": "Only when the turn paused on calls that wait; `message` is the text so far."},
        "pending": {"type": "array", "items": {
            "type": "object", "required": ["kind", "call_id", "name", "arguments"],
            "properties": {"kind": _KIND, "call_id": {"type": "string"}, "name": {"type": "string"},
                           "arguments": {}}}}})
