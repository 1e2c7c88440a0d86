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
        "type": "object", "required": ["name", "parameters"], "additionalProperties": False,
        "description": "A tool the caller runs itself. Its name must not be one of the service's own tools "
                       "(400); a name declared twice is used once, as first declared.",
        "properties": {"name": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
                       "description": {"type": "string", "maxLength": 2000},
                       "parameters": {"$ref": "#/components/schemas/ClientToolParameters"}},
    },
    # Any JSON Schema object is accepted; this is the common shape, which the docs can state exactly.
    "ClientToolParameters": {
        "type": "object", "additionalProperties": False,
        "description": "A JSON Schema (draft 2020-12) of the arguments, of type object.",
        "properties": {
            "type": {"type": "string", "enum": ["object"]},
            "properties": {"type": "object", "additionalProperties": {
                "type": "object", "additionalProperties": False,
                "properties": {"type": {"type": "string",
                                        "enum": ["string", "number", "integer", "boolean", "object", "array"]},
                               "description": {"type": "string"}}}},
            "required": {"type": "array", "uniqueItems": True, "items": {"type": "string"}},
        },
    },
}


def _add_status(properties: dict[str, Any], value: str, meaning: str) -> None:
    """Add ``value`` to a ``status`` enum another feature may have started (handoff's with_human)."""
    status = properties.setdefault("status", {"type": "string", "enum": [], "description": ""})
    status["enum"].append(value)
    status["description"] = (status["description"] + f" `{value}`: {meaning}.").strip()


def extend(schemas: dict[str, dict[str, Any]]) -> None:
    """Add this feature's schemas, and its fields to the shared ones (stream events, the turn
    status, the chat request and reply)."""
    schemas.update(SCHEMAS)
    stream = schemas["StreamEvent"]
    stream["oneOf"].append({"$ref": "#/components/schemas/InputRequiredEvent"})
    stream["discriminator"]["mapping"]["input_required"] = "#/components/schemas/InputRequiredEvent"
    frame = schemas["SseFrame"]["properties"]["data"]
    frame["pattern"] = frame["pattern"].replace("tool_result|", "tool_result|input_required|")
    done = schemas["DoneEvent"]["properties"]
    _add_status(done, "waiting", "when the turn paused: calls wait for a decision (see pending)")
    done["pending"] = {"type": "array", "items": {"type": "string"}, "description": "The waiting calls' ids."}
    schemas["TurnStatus"]["properties"]["status"]["enum"].append("waiting")
    schemas["ChatRequest"]["properties"]["tools"] = {
        "type": "array", "maxItems": 32, "items": {"$ref": "#/components/schemas/ClientTool"},
        "description": "Client tools: offered to the model for this turn and its continuations; a call waits "
                       "for the client's output (POST /api/v1/sessions/{session_id}/pending/{call_id})."}
    reply = schemas["ChatResponse"]["properties"]
    _add_status(reply, "waiting", "when the turn paused on calls that wait (`message` is the text so far)")
    reply.update({
        "pending": {"type": "array", "items": {
            "type": "object", "required": ["kind", "call_id", "name", "arguments"],
            "properties": {"kind": _KIND, "call_id": {"type": "string"}, "name": {"type": "string"},
                           "arguments": {}}}}})
    _extend_protocols(schemas)


def _extend_protocols(schemas: dict[str, dict[str, Any]]) -> None:
    """AG-UI's interrupts and resume entries, the AI SDK's approval parts and client tools."""
    tools = {"type": "array", "maxItems": 32, "items": {"$ref": "#/components/schemas/ClientTool"}}
    run = schemas["RunAgentInput"]
    run["description"] = ("AG-UI's RunAgentInput. The last `user` message is the new turn; `tools` are frontend "
                          "tools offered to the model; `resume` answers the interrupts of the previous run, and a "
                          "`tool` message answers a waiting frontend tool call.")
    run["properties"]["tools"] = tools
    run["properties"]["resume"] = {"type": "array", "items": {
        "type": "object", "required": ["interruptId", "status"],
        "properties": {"interruptId": {"type": "string", "description": "The waiting call's id."},
                       "status": {"type": "string", "enum": ["resolved", "cancelled"]},
                       "payload": {"description": "`{\"approved\": bool, \"reason\"?: str}`, or "
                                                  "`{\"output\": ...}` for a frontend tool."}}}}
    schemas["AgUiEvent"]["properties"]["outcome"] = {
        "type": "object", "description": "RUN_FINISHED: `{type: interrupt, interrupts: [{id, reason, toolCallId, "
                                         "message, metadata}]}` when calls wait for approval; `{type: success, "
                                         "pendingToolCallIds}` when frontend tool calls wait."}
    request = schemas["AiSdkChatRequest"]
    request["properties"]["tools"] = tools
    request["description"] += (" A last assistant message whose tool parts are `approval-responded` or "
                               "`output-available` answers the calls that wait, and continues the turn.")
    part = schemas["AiSdkPart"]
    part["properties"]["type"]["enum"].append("tool-approval-request")
    part["properties"]["approvalId"] = {"type": "string", "description": "tool-approval-request: the call id."}
    frame = schemas["AiSdkFrame"]["properties"]["data"]
    frame["pattern"] = frame["pattern"].replace("tool-output-error|", "tool-output-error|tool-approval-request|")
