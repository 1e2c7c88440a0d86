"""OpenAPI schemas of the feedback routes (handlers/feedback.py), merged into the spec by docs.py."""

from __future__ import annotations

from typing import Any

from msev15.store.feedback import MAX_COMMENT_CHARS

_RATING: dict[str, Any] = {"type": "string", "enum": ["up", "down"]}

SCHEMAS: dict[str, dict[str, Any]] = {
    "FeedbackRequest": {
        "type": "object",
        "required": ["rating"],
        "additionalProperties": False,
        "properties": {
            "rating": _RATING,
            "comment": {"type": "string", "nullable": True, "maxLength": MAX_COMMENT_CHARS},
        },
        "example": {"rating": "down", "comment": "It did not answer my question."},
    },
    "FeedbackItem": {
        "type": "object",
        "required": ["session_id", "turn_id", "rating", "comment", "caller", "created_at"],
        "properties": {
            "session_id": {"type": "string"},
            "turn_id": {"type": "string"},
            "rating": _RATING,
            "comment": {"type": "string", "nullable": True},
            "caller": {"type": "string", "description": "The API key id or token subject; anonymous without auth."},
            "created_at": {"type": "string", "format": "date-time"},
        },
    },
    "FeedbackList": {
        "type": "object",
        "required": ["tenant_id", "feedback"],
        "properties": {
            "tenant_id": {"type": "string"},
            "feedback": {"type": "array", "items": {"$ref": "#/components/schemas/FeedbackItem"}},
        },
    },
}
