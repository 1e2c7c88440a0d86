"""OpenAPI components of the human-handoff routes (handlers/handoffs.py), merged into the document
by handlers/docs.py. The stream event and the ``mode``/``author`` fields of existing shapes are in
docs.py's own "human handoff" block."""

from __future__ import annotations

from typing import Any

_TS = {"type": "string", "format": "date-time", "example": "2026-02-19T10:30:00Z"}
_SESSION = {"$ref": "#/components/schemas/Id"}

HANDOFF_SCHEMAS: dict[str, dict[str, Any]] = {
    "SessionStreamEvent": {
        "description": "One event of the session stream (`id: {n}` before its `data:` line): a turn's event "
                       "(a `#/components/schemas/StreamEvent` with `turn_id`), or one of these.",
        "type": "object", "required": ["type"],
        "properties": {
            "type": {"type": "string", "enum": ["token", "tool_call", "tool_result", "handoff", "done", "error",
                                                "human_message", "customer_message", "mode", "session_deleted"]},
            "turn_id": {"type": "string"}, "message_id": {"type": "string"}, "content": {"type": "string"},
            "author": {"type": "object", "properties": {"id": {"type": "string"}, "name": {"type": "string"}}},
            "mode": {"$ref": "#/components/schemas/Mode"},
            "by": {"type": "object", "description": "Who changed the mode: {type: agent}, {type: human, id, name} "
                                                    "or {type: timeout}.",
                   "properties": {"type": {"type": "string"}, "id": {"type": "string"}, "name": {"type": "string"}}}},
    },
    "Handoff": {
        "type": "object",
        "required": ["session_id", "status", "reason", "summary", "requested_at", "waiting_seconds"],
        "properties": {
            "session_id": _SESSION,
            "status": {"type": "string", "enum": ["waiting", "active", "ticketed", "released"]},
            "reason": {"type": "string"}, "summary": {"type": "string"}, "requested_at": _TS,
            "claimed_by": {"type": "string", "description": "The operator: the API key's name or the token's sub."},
            "claimed_at": _TS,
            "waiting_seconds": {"type": "integer", "description": "Seconds from the request to the claim (or to "
                                                                  "now, while nobody has claimed it)."}},
    },
    "HandoffList": {"type": "object", "required": ["handoffs"],
                    "properties": {"handoffs": {"type": "array", "items": {"$ref": "#/components/schemas/Handoff"}}}},
    "Claimed": {"type": "object", "required": ["session_id", "status", "claimed_by"],
                "properties": {"session_id": _SESSION, "status": {"type": "string", "enum": ["active"]},
                               "claimed_by": {"type": "string"}}},
    "OperatorMessage": {"type": "object", "required": ["content"], "additionalProperties": False,
                        "properties": {"content": {"type": "string", "minLength": 1, "maxLength": 16000,
                                                   "pattern": r"^[^\u0000]*[^\s\u0000][^\u0000]*$",
                                                   "description": "Not blank, no NUL characters; at most "
                                                                  "MAX_MESSAGE_CHARS."},
                                       "tenant_id": _SESSION}},
    "MessagePosted": {"type": "object", "required": ["message_id"], "properties": {"message_id": {"type": "string"}}},
    "Release": {"type": "object", "additionalProperties": False,
                "properties": {"note": {"type": "string", "maxLength": 16000, "pattern": r"^[^\u0000]*$",
                                        "description": "Added to the conversation as the operator's last "
                                                       "message (a blank note adds nothing)."},
                               "tenant_id": _SESSION}},
    "Released": {"type": "object", "required": ["session_id", "status", "mode"],
                 "properties": {"session_id": _SESSION, "status": {"type": "string", "enum": ["released"]},
                                "mode": {"type": "string", "enum": ["agent"]}}},
}


def _error(description: str, example: dict[str, Any]) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"},
                                             "example": {**example, "request_id": "6f1c0e2a9b8d4c7e",
                                                         "timestamp": "2026-02-19T10:30:00Z"}}}}


HANDOFF_RESPONSES: dict[str, dict[str, Any]] = {
    "Forbidden": _error("The credential's role may not do this (the envelope names the role needed), or "
                        "another operator holds the conversation.", {
                            "error": "forbidden", "message": "This needs the role operator (or admin); the "
                            "credential's role is customer.", "required_role": "operator"}),
    "HandoffConflict": _error("already_claimed: another operator holds it; not_active: nobody holds it.", {
        "error": "already_claimed", "message": "Another operator holds this conversation.",
        "session_id": "abc-123", "claimed_by": "Alice"}),
}
