"""The MCP server behind ``/mcp``: the tool ``ask_customer_service_agent`` over the turn engine.

The tool starts a turn through :func:`msev15.handlers.chat.start_turn` like every front door
(so tenant rate limits, fairness and metrics apply), follows it with
:func:`msev15.handlers.streams.follow` and reports each batch of events as an MCP progress
notification; the answer is text content plus structured content ``{session_id, turn_id,
status, pending?}``. The tenant is the credential's, put in the ASGI scope's state by the
route (handlers/mcp_endpoint.py). Imported only when the first ``/mcp`` request comes: the
``mcp`` package is a large share of the service's start-up time.
"""

from __future__ import annotations

from typing import Annotated, Any

from aiohttp import web
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import CallToolResult, TextContent
from pydantic import BaseModel, Field

from msev15 import __version__
from msev15.common.ids import new_id
from msev15.config import SETTINGS
from msev15.events.types import Token, ToolCalled, TurnCompleted, to_wire
from msev15.handlers.asgi_bridge import COUNTED_STATE, TENANT_STATE
from msev15.handlers.chat import start_turn
from msev15.handlers.errors import ApiError
from msev15.handlers.streams import follow
from msev15.handlers.validation import check_id, check_message

TOOL = "ask_customer_service_agent"


HELD = "A person from the support team has this conversation: the message was passed on to them."


class Answer(BaseModel):
    session_id: str = Field(description="The conversation: pass it again to continue it.")
    turn_id: str = Field(description="This turn (GET /api/v1/sessions/{session_id}/turns/{turn_id}).")
    status: str = Field(description="completed, failed, cancelled, interrupted, or waiting / with_human.")
    pending: list[Any] | None = Field(default=None, description="What a waiting turn waits for.")


def _caller(ctx: Context) -> tuple[str, bool]:
    request = ctx.request_context.request
    state = getattr(request, "scope", {}).get("state", {})
    tenant = state.get(TENANT_STATE)
    if not isinstance(tenant, str):  # only reachable through our handler, which always sets it
        raise ToolError("no tenant for this call")
    return tenant, bool(state.get(COUNTED_STATE))


def _progress(events: list[Any]) -> str:
    text = "".join(e.content for e in events if isinstance(e, Token))
    calls = [e.name for e in events if isinstance(e, ToolCalled)]
    return text or (f"calling {', '.join(calls)}" if calls else "working")


def build_server(app: web.Application) -> MCPServer:
    server = MCPServer(name="customer-service-agent", version=__version__,
                       instructions="Ask the customer-service agent (orders, complaints, email, escalation). Pass "
                                    "session_id from an earlier answer to continue a conversation.")

    @server.tool(name=TOOL, description="Send a message to the customer-service agent and get its answer. "
                                        "Progress notifications carry the answer as it is written.")
    async def ask(message: Annotated[str, Field(description="The customer's message.")],
                  ctx: Context,
                  session_id: Annotated[str | None, Field(description="Continue this conversation.")] = None,
                  ) -> Annotated[CallToolResult, Answer]:
        tenant_id, counted = _caller(ctx)
        settings = app[SETTINGS]
        try:
            session = check_id(session_id, "session_id") if session_id is not None else new_id()
            text = check_message(message, settings.max_message_chars)
            record = await start_turn(app, tenant_id, session, text, stream=True, counted=counted)
        except ApiError as exc:
            raise ToolError(f"{exc.error}: {exc.message}") from None
        async for first, batch in follow(record):
            await ctx.report_progress(first + len(batch) - 1, None, _progress(batch))
        terminal = await record.outcome()
        wire = to_wire(terminal)
        answer = Answer(session_id=session, turn_id=record.turn_id,
                        status=wire.get("status", record.status), pending=wire.get("pending"))
        if isinstance(terminal, TurnCompleted):
            content = terminal.message or (HELD if terminal.status == "with_human" else "")
        else:
            content = f"{terminal.error}: {terminal.message}"
        return CallToolResult(content=[TextContent(type="text", text=content)],
                              structured_content=answer.model_dump(exclude_none=True),
                              is_error=not isinstance(terminal, TurnCompleted))

    return server


def session_manager(app: web.Application, path: str) -> StreamableHTTPSessionManager:
    """A stateless session manager of the server (its Starlette app is made, never served: the
    service's middlewares check the caller, and DNS rebinding checks, meant for unauthenticated
    servers on localhost, would refuse the Host names a deployment is reached by)."""
    server = build_server(app)
    server.streamable_http_app(streamable_http_path=path, stateless_http=True,
                               transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False))
    return server.session_manager
