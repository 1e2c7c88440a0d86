"""The A2A routes: ``GET /.well-known/agent-card.json`` and ``POST /a2a``.

Thin on purpose: the A2A SDK's types (protobuf) cost about a third of the service's start-up
time, so the modules that use them (handlers/a2a.py, a2a_card.py, a2a_tasks.py, ...) are
imported by the first A2A request, not at start.
"""

from __future__ import annotations

from aiohttp import web

CARD_PATH = "/.well-known/agent-card.json"
RPC_PATH = "/a2a"


async def agent_card(request: web.Request) -> web.Response:
    """The A2A agent card.
    ---
    summary: A2A agent card
    description: |
      Public (no credential). The JSON-RPC endpoint's URL, the skills, `streaming: true`, no push
      notifications, and the security schemes of the running `AUTH_MODE`. A2A 1.0 fields with the
      A2A 0.3 ones merged in.
    tags: [agent-to-agent]
    responses:
      "200":
        description: The agent card.
        content:
          application/json:
            schema: {$ref: "#/components/schemas/A2aAgentCard"}
    """
    from msev15.handlers.a2a_card import card_response

    return card_response(request, RPC_PATH)


async def rpc(request: web.Request) -> web.StreamResponse:
    """A2A JSON-RPC (1.0 method names, 0.3 names as aliases).
    ---
    summary: A2A JSON-RPC
    description: |
      `SendMessage`, `SendStreamingMessage` (SSE), `GetTask`, `ListTasks`, `CancelTask`,
      `SubscribeToTask` (SSE), and the A2A 0.3 names `message/send`, `message/stream`,
      `tasks/get`, `tasks/list`, `tasks/cancel`, `tasks/resubscribe`. `contextId` is the session
      id (a message without one starts a new session); the task id is the turn id. Errors are
      JSON-RPC errors with A2A's codes (-32001 task not found, -32002 not cancelable, -32003 push
      notifications not supported, -32004 unsupported operation, -32602 invalid params).
      The agent card at `/.well-known/agent-card.json` describes it.
    tags: [agent-to-agent]
    requestBody:
      required: true
      content:
        application/json:
          schema: {$ref: "#/components/schemas/A2aRequest"}
          example: {jsonrpc: "2.0", id: 1, method: SendMessage,
                    params: {message: {messageId: m1, role: ROLE_USER, parts: [{text: "Show my recent orders"}]}}}
    responses:
      "200":
        description: A JSON-RPC response, or for the streaming methods an event stream of them.
        content:
          application/json:
            schema: {$ref: "#/components/schemas/A2aResponse"}
          text/event-stream:
            schema: {$ref: "#/components/schemas/A2aFrame"}
      "401": {$ref: "#/components/responses/Unauthorized"}
      "429": {$ref: "#/components/responses/TenantBusy"}
      "503": {$ref: "#/components/responses/Unavailable"}
    """
    from msev15.handlers.a2a import handle

    return await handle(request)
