"""OpenAPI schemas of the agent-to-agent endpoints (A2A JSON-RPC, its agent card, MCP), merged into
/openapi.json by handlers/docs.py. The protocols' own specifications are the reference; these
describe the envelope well enough for a reader and for schemathesis."""

from __future__ import annotations

from typing import Any

_A2A_METHODS = ["SendMessage", "SendStreamingMessage", "GetTask", "ListTasks", "CancelTask", "SubscribeToTask",
                "message/send", "message/stream", "tasks/get", "tasks/list", "tasks/cancel", "tasks/resubscribe"]
_RPC_ID = {"oneOf": [{"type": "string"}, {"type": "integer"}], "nullable": True}

AGENT_SCHEMAS: dict[str, dict[str, Any]] = {
    "A2aRequest": {
        "type": "object", "required": ["jsonrpc", "method"],
        "description": "A JSON-RPC 2.0 request of A2A 1.0 (or an A2A 0.3 alias). `params` is the method's "
                       "request message in the protocol's JSON form (camelCase fields, enum names).",
        "properties": {"jsonrpc": {"type": "string", "enum": ["2.0"]}, "id": _RPC_ID,
                       "method": {"type": "string", "enum": _A2A_METHODS}, "params": {"type": "object"}},
    },
    "A2aResponse": {
        "type": "object", "required": ["jsonrpc", "id"],
        "description": "A JSON-RPC 2.0 response: `result` (a Task, `{task}` for SendMessage, `{tasks, nextPageToken, "
                       "pageSize, totalSize}` for ListTasks) or `error` with an A2A code.",
        "properties": {"jsonrpc": {"type": "string", "enum": ["2.0"]}, "id": _RPC_ID, "result": {"type": "object"},
                       "error": {"type": "object", "required": ["code", "message"],
                                 "properties": {"code": {"type": "integer"}, "message": {"type": "string"},
                                                "data": {}}}},
    },
    "A2aFrame": {
        "type": "object", "required": ["data"],
        "description": "One SSE message: a `data:` line holding an `A2aResponse` whose result is a StreamResponse "
                       "(`task`, `statusUpdate` or `artifactUpdate`); turn events carry `id: {turn_id}:{seq}`.",
        "properties": {"data": {"type": "string", "pattern": '^[{]"jsonrpc": "2.0"'}},
    },
    "A2aAgentCard": {
        "type": "object", "required": ["name", "description", "version", "supportedInterfaces", "capabilities",
                                       "skills", "defaultInputModes", "defaultOutputModes"],
        "description": "An A2A 1.0 agent card, with the A2A 0.3 fields (`url`, `preferredTransport`, "
                       "`protocolVersion`, ...) merged in.",
        "properties": {"name": {"type": "string"}, "description": {"type": "string"}, "version": {"type": "string"},
                       "supportedInterfaces": {"type": "array", "items": {"type": "object"}},
                       "capabilities": {"type": "object"}, "skills": {"type": "array", "items": {"type": "object"}},
                       "defaultInputModes": {"type": "array", "items": {"type": "string"}},
                       "defaultOutputModes": {"type": "array", "items": {"type": "string"}},
                       "securitySchemes": {"type": "object"}, "url": {"type": "string"}},
    },
    "McpMessage": {
        "type": "object", "required": ["jsonrpc"],
        "description": "A JSON-RPC 2.0 message of the Model Context Protocol (initialize, tools/list, tools/call, "
                       "notifications).",
        "properties": {"jsonrpc": {"type": "string", "enum": ["2.0"]}, "id": _RPC_ID, "method": {"type": "string"},
                       "params": {"type": "object"}, "result": {"type": "object"}, "error": {"type": "object"}},
    },
    "McpFrame": {
        "type": "object", "required": ["data"],
        "description": "One SSE message: a `data:` line holding an `McpMessage` (progress notifications, then the "
                       "response).",
        "properties": {"event": {"type": "string"}, "data": {"type": "string"}},
    },
}
