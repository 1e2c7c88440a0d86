"""MCP at ``/mcp`` (Streamable HTTP, the ``mcp`` package's server, stateless): other agents ask
the customer-service agent through one tool, ``ask_customer_service_agent`` (handlers/mcp_tool.py).

Authentication is the service's own (the middleware covers ``/mcp`` like ``/api/``); the tenant
is the credential's, handed to the tool in the ASGI scope's state; the transport runs inside
this app through handlers/asgi_bridge.py. Stateless: every POST is a whole exchange, so any
instance answers any call.

The session manager's task group is entered and exited in one owner task, started by the first
``/mcp`` request (so a service nobody asks over MCP never loads the ``mcp`` package) and
stopped and awaited by :func:`mcp_endpoint_ctx`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from aiohttp import web

from msev15.handlers.asgi_bridge import COUNTED_STATE, TENANT_STATE, Asgi, serve_asgi
from msev15.handlers.protocols import request_tenant
from msev15.handlers.ratelimit import TENANT_COUNTED

if TYPE_CHECKING:
    from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

MCP_PATH = "/mcp"


class McpEndpoint:
    """The MCP session manager, started on first use by its one owner task."""

    def __init__(self, app: web.Application) -> None:
        self._app = app
        self._owner: asyncio.Task[None] | None = None
        self._running: asyncio.Future[Asgi] | None = None
        self._stop = asyncio.Event()

    async def handler(self) -> Asgi:
        if self._running is None:
            self._running = asyncio.get_running_loop().create_future()
            self._owner = asyncio.create_task(self._own(self._running), name="mcp-endpoint")
        return await asyncio.shield(self._running)  # one request leaving does not cancel the start

    async def _own(self, running: asyncio.Future[Asgi]) -> None:
        from msev15.handlers.mcp_tool import session_manager

        try:
            manager: StreamableHTTPSessionManager = session_manager(self._app, MCP_PATH)
            async with manager.run():
                running.set_result(manager.handle_request)
                await self._stop.wait()
        except BaseException as exc:
            if not running.done():
                running.set_exception(exc)
            raise

    async def close(self) -> None:
        self._stop.set()
        if self._owner is not None:
            await asyncio.gather(self._owner, return_exceptions=True)


MCP_ENDPOINT: web.AppKey[McpEndpoint] = web.AppKey("msev15.mcp_endpoint", McpEndpoint)


async def mcp_endpoint_ctx(app: web.Application) -> AsyncIterator[None]:
    endpoint = app[MCP_ENDPOINT] = McpEndpoint(app)
    try:
        yield
    finally:
        await endpoint.close()


async def mcp(request: web.Request) -> web.StreamResponse:
    """MCP (Streamable HTTP): the tool `ask_customer_service_agent`.
    ---
    summary: MCP endpoint
    description: |
      The Model Context Protocol over Streamable HTTP (stateless). One tool,
      `ask_customer_service_agent {message, session_id?}`: its result is the answer as text content
      and `{session_id, turn_id, status, pending?}` as structured content; progress notifications
      carry the answer while it is written. Same credentials as `/api/`; the tenant is the
      credential's (under AUTH_MODE=none the `X-Tenant-ID` header, else `default`).
    tags: [agent-to-agent]
    requestBody:
      required: true
      content:
        application/json:
          schema: {$ref: "#/components/schemas/McpMessage"}
          example: {jsonrpc: "2.0", id: 1, method: tools/call,
                    params: {name: ask_customer_service_agent, arguments: {message: "Show my recent orders"}}}
    responses:
      "200":
        description: A JSON-RPC response, as JSON or as an event stream (with progress notifications).
        content:
          application/json:
            schema: {$ref: "#/components/schemas/McpMessage"}
          text/event-stream:
            schema: {$ref: "#/components/schemas/McpFrame"}
      "202": {description: A notification or response was accepted.}
    """
    state = {TENANT_STATE: request_tenant(request), COUNTED_STATE: request.get(TENANT_COUNTED, False)}
    return await serve_asgi(await request.app[MCP_ENDPOINT].handler(), request, state)
