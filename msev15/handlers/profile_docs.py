"""OpenAPI components of the agent-profile routes (handlers/profiles.py): the profile's schema (the
same bounds store/profile_model.py enforces), its records and the errors, merged by openapi_spec.py."""

from __future__ import annotations

from typing import Any

from msev15.store import profile_model as m

_TS = {"type": "string", "format": "date-time", "example": "2026-02-19T10:30:00Z"}
_PATTERN = {"type": "string", "minLength": 1, "maxLength": m.MAX_PATTERN_CHARS,
            "description": "An fnmatch pattern over tool names (built-in, MCP and client tools)."}
_PATTERNS = {"type": "array", "maxItems": m.MAX_PATTERNS, "items": _PATTERN}
_VERSION = {"type": "integer", "minimum": 1, "maximum": 10**18 - 1}

_SERVER = {
    "type": "object", "required": ["name", "url"], "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$",
                 "description": "Unique within the profile."},
        "url": {"type": "string", "format": "uri", "maxLength": m.MAX_URL_CHARS,
                "description": "The server's Streamable HTTP endpoint (http or https)."},
        "headers": {"type": "object", "maxProperties": m.MAX_HEADERS,
                    "additionalProperties": {"type": "string", "maxLength": m.MAX_HEADER_VALUE_CHARS},
                    "description": "Sent on every request; names are HTTP header tokens (not ones the "
                                   "transport sets itself), values on one line. "
                                   f"A value `env:{m.SECRET_PREFIX}NAME` is read from the "
                                   "service's environment when connecting (the secret stays out of the store); "
                                   "an inline value is stored as given and shown as `***` in every response."},
        "tools": {**_PATTERNS, "description": "The server's tools offered to the model (absent: all of them)."},
    },
}

PROFILE_SCHEMAS: dict[str, dict[str, Any]] = {
    "AgentProfile": {
        "type": "object", "additionalProperties": False,
        "description": "A tenant's agent. Every field is optional: what is absent comes from the service's "
                       "settings, so an empty profile is the default agent.",
        "properties": {
            "instructions": {"type": "string", "minLength": 1, "maxLength": m.MAX_INSTRUCTIONS_CHARS,
                             "pattern": r"\S", "description": "Replaces the system prompt (not blank)."},
            "tools": {"type": "object", "additionalProperties": False,
                      "properties": {"allow": {**_PATTERNS, "description": "Only these tools (absent: all)."},
                                     "deny": {**_PATTERNS, "description": "Never these (a call is refused)."}}},
            "approval": {**_PATTERNS, "description": "Tools that need a person's approval; replaces TOOL_APPROVAL "
                                                     "for this tenant."},
            "mcp_servers": {"type": "array", "maxItems": m.MAX_SERVERS, "items": _SERVER},
            "model": {"type": "object", "additionalProperties": False, "properties": {
                "name": {"type": "string", "minLength": 1, "maxLength": m.MAX_MODEL_NAME_CHARS,
                         "description": "The deployment (Azure) or model on the service's configured endpoint."},
                "api": {"type": "string", "enum": list(m.MODEL_APIS)},
                "temperature": {"type": "number", "minimum": 0, "maximum": 2},
                "max_output_tokens": {"type": "integer", "minimum": 1, "maximum": m.MAX_OUTPUT_TOKENS}}},
            "handoff": {"type": "object", "additionalProperties": False, "properties": {
                "enabled": {"type": "boolean"},
                "timeout_seconds": {"type": "integer", "minimum": 1, "maximum": m.MAX_TIMEOUT_SECONDS}}},
            "greeting": {"type": "string", "maxLength": m.MAX_GREETING_CHARS},
        },
        "example": {"instructions": "You answer for Acme Telecom. Be brief.",
                    "tools": {"allow": ["lookup_*", "crm_*"], "deny": ["send_email"]},
                    "approval": ["crm_refund"],
                    "mcp_servers": [{"name": "crm", "url": "https://crm.acme.example/mcp",
                                     "headers": {"Authorization": f"env:{m.SECRET_PREFIX}ACME_CRM"},
                                     "tools": ["crm_*"]}],
                    "model": {"name": "gpt-4o-mini", "api": "chat", "temperature": 0.2},
                    "handoff": {"enabled": True, "timeout_seconds": 300},
                    "greeting": "Hello from Acme! How can I help?"},
    },
    "ProfileRecord": {
        "type": "object", "required": ["version", "profile", "updated_at", "updated_by"],
        "properties": {"version": _VERSION, "profile": {"$ref": "#/components/schemas/AgentProfile"},
                       "updated_at": _TS,
                       "updated_by": {"type": "string", "description": "The API key's name or the token's sub; "
                                                                       "anonymous under AUTH_MODE=none."}},
    },
    "ProfileVersion": {"type": "object", "required": ["version"], "properties": {"version": _VERSION}},
    "ProfileVersions": {
        "type": "object", "required": ["versions"],
        "properties": {"versions": {"type": "array", "items": {
            "type": "object", "required": ["version", "updated_at", "updated_by"],
            "properties": {"version": _VERSION, "updated_at": _TS, "updated_by": {"type": "string"}}}}},
    },
    "ProfileRollback": {"type": "object", "required": ["version"], "additionalProperties": False,
                        "properties": {"version": _VERSION}},
    "ProfileProblem": {"type": "object", "required": ["field", "message"],
                       "properties": {"field": {"type": "string", "example": "tools.allow[2]"},
                                      "message": {"type": "string", "example": "has an unbalanced '['"}}},
}


def _error(description: str, example: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    schema = {"allOf": [{"$ref": "#/components/schemas/Error"}, {"type": "object", "properties": extra}]}
    return {"description": description,
            "content": {"application/json": {"schema": schema,
                                             "example": {**example, "request_id": "6f1c0e2a9b8d4c7e",
                                                         "timestamp": "2026-02-19T10:30:00Z"}}}}


PROFILE_RESPONSES: dict[str, dict[str, Any]] = {
    "NoProfile": _error("The tenant has no current profile (or no such version): the defaults apply.", {
        "error": "no_profile", "message": "This tenant has no profile; its agent uses the service's defaults."}, {}),
    "ProfileInvalid": _error("The profile (or a parameter) is invalid: `problems` lists every problem.", {
        "error": "validation_error", "message": "The profile is invalid (2 problems).",
        "problems": [{"field": "tools.allow[2]", "message": "has an unbalanced '['"},
                     {"field": "model.api", "message": "must be one of: chat, responses"}]},
        {"problems": {"type": "array", "items": {"$ref": "#/components/schemas/ProfileProblem"}}}),
    "VersionConflict": _error("If-Match named a version that is not current.", {
        "error": "version_conflict", "message": "The profile changed since the version named in If-Match; read it "
        "again and retry.", "current_version": 4}, {"current_version": {"type": "integer", "minimum": 0}}),
}
