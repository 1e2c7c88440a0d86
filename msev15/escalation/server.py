"""The MCP face of the service: tools ``sendemail`` and ``get_email_status`` over Streamable
HTTP at ``/mcp``, plus ``GET /health`` and ``GET /metrics``.

:class:`EscalationServer` owns everything one running server needs (the service, the uvicorn
server, its task and socket) and is used the same way by the CLI and by tests::

    async with EscalationServer(settings, host="127.0.0.1", port=0) as server:
        ...  # server.url is http://127.0.0.1:<port>/mcp

Delivery records belong to tenants. The tenant comes from the request's ``_meta`` (key
:data:`~msev15.mcpkit.meta.TENANT_META_KEY`, set by the service from the turn), never from a
tool argument a prompt could set. A call without the key works in tenant "default"; a malformed
tenant is refused. ``get_email_status`` only finds the caller's own tenant's emails.

``sendemail`` also reads an idempotency key from ``_meta`` (:mod:`msev15.mcpkit.meta`): a call
repeating a key its tenant already used sends nothing and gets the first call's result. The key
is never a tool argument either.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Callable
from datetime import datetime
from types import TracebackType
from typing import Annotated, Any, Self, TypedDict

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, TextContent
from pydantic import Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from msev15 import __version__
from msev15.common.telemetry import TelemetryConfig
from msev15.escalation.config import EscalationSettings
from msev15.escalation.delivery import Backend
from msev15.escalation.metrics import CONTENT_TYPE
from msev15.escalation.models import TICKET_ID_RE, USE_CASES, InvalidRequest
from msev15.escalation.replay import KeyConflict, KeyTaken
from msev15.escalation.service import EmailNotFound, EscalationService
from msev15.escalation.templates import TemplateError, TemplateRegistry
from msev15.mcpkit import capabilities as caps
from msev15.mcpkit.auth import bind_refusal, is_authenticated
from msev15.mcpkit.caller import caller, caller_tenant
from msev15.mcpkit.capabilities import capability_meta
from msev15.mcpkit.runner import McpHttpServer, bind_socket

log = logging.getLogger("escalation.server")

MCP_PATH = "/mcp"

_INSTRUCTIONS = (
    "EscalationComms: when a customer's question cannot be answered and a support ticket has "
    "been opened, call sendemail once per ticket to notify the customer and the support team. "
    "Check delivery later with get_email_status(email_id)."
)


class SendEmailResult(TypedDict):
    email_id: str
    status: str
    sent_at: str
    recipients: dict[str, str]
    backend: str
    errors: dict[str, str]


def _result(payload: dict[str, Any], *, is_error: bool) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=json.dumps(payload, indent=2))],
                          structured_content=payload, is_error=is_error)


def build_mcp_server(service: EscalationService) -> MCPServer:
    """An MCPServer whose tools and routes call ``service``."""
    mcp: MCPServer = MCPServer("escalation-comms", title="EscalationComms", version=__version__,
                               instructions=_INSTRUCTIONS, subscriptions=False)

    @mcp.tool(name="sendemail", title="Send ticket emails", meta=capability_meta(caps.TICKET_ESCALATE))
    async def sendemail(
        ticket_id: Annotated[str, Field(description="Support ticket id, e.g. TKT-2025-001234",
                                        json_schema_extra={"pattern": f"^{TICKET_ID_RE.pattern}$", "maxLength": 64})],
        customer_id: Annotated[str, Field(description="Customer identifier, e.g. CUST-001")],
        customer_email: Annotated[str, Field(description="Customer's email address",
                                             json_schema_extra={"format": "email"})],
        query: Annotated[str, Field(description="The customer's original question")],
        use_case: Annotated[str, Field(description="UC2 (Product Information & FAQ) or UC3 (AI Money Coach)",
                                       json_schema_extra={"enum": list(USE_CASES)})],
        reason: Annotated[str, Field(description="Why the ticket was created, e.g. 'Low confidence (0.21)'")],
        *,
        ctx: Context,
    ) -> Annotated[CallToolResult, SendEmailResult]:
        """Email the customer (ticket confirmation) and the support team (new ticket) for one ticket.

        Returns email_id, status (sent, partial or failed), sent_at, recipients and, per recipient,
        any delivery error. A partial or failed result is flagged as an error result.
        """
        try:
            tenant_id, key = caller(ctx)
        except ToolError:
            service.metrics.rejected.inc()
            raise
        try:
            result = await service.send(tenant_id=tenant_id, idempotency_key=key, ticket_id=ticket_id,
                                        customer_id=customer_id, customer_email=customer_email, query=query,
                                        use_case=use_case, reason=reason)
        except InvalidRequest as exc:
            raise ToolError(f"Invalid sendemail arguments: {'; '.join(exc.problems)}") from None
        except (KeyConflict, KeyTaken) as exc:
            raise ToolError(str(exc)) from None
        except TemplateError as exc:
            log.error("Template rendering error: %s", exc)
            raise ToolError(f"Template rendering error: {exc}") from None
        return _result(result.to_dict(), is_error=result.status != "sent")

    @mcp.tool(name="get_email_status", title="Email delivery status")
    async def get_email_status(
        email_id: Annotated[str, Field(
            description="The email_id sendemail returned, e.g. EMAIL-UC2-20251107-001-K7Q2MZ")],
        *,
        ctx: Context,
    ) -> dict[str, Any]:
        """The delivery record of both messages of one sendemail call (refreshed from ACS when used)."""
        tenant_id = caller_tenant(ctx)
        try:
            return await service.status(email_id, tenant_id=tenant_id)
        except InvalidRequest as exc:
            raise ToolError(str(exc)) from None
        except EmailNotFound as exc:
            raise ToolError(str(exc)) from None

    # mcp's custom_route() has no return annotation, so mypy would take the route as untyped.
    @mcp.custom_route("/health", methods=["GET"])  # type: ignore[untyped-decorator]
    async def health(request: Request) -> Response:
        ok, body = await service.health(detailed=is_authenticated(request.scope))
        return JSONResponse(body, status_code=200 if ok else 503)

    @mcp.custom_route("/metrics", methods=["GET"])  # type: ignore[untyped-decorator]
    async def metrics(request: Request) -> Response:
        return Response(service.metrics.render(), media_type=CONTENT_TYPE)

    return mcp


class EscalationServer:
    """One running EscalationComms server: service, MCP app, uvicorn, socket. Start once, stop once."""

    def __init__(self, settings: EscalationSettings, *, host: str | None = None, port: int | None = None,
                 backend: Backend | None = None, templates: TemplateRegistry | None = None,
                 handle_signals: bool = False, clock: Callable[[], datetime] | None = None,
                 telemetry: TelemetryConfig | None = None) -> None:
        self.settings = settings
        self.telemetry = telemetry
        self.host = settings.host if host is None else host
        self._port = settings.port if port is None else port
        self._backend = backend
        self._templates = templates
        self._clock = clock
        self._handle_signals = handle_signals
        self.service: EscalationService | None = None
        self._http: McpHttpServer | None = None
        self._task: asyncio.Task[None] | None = None
        self._sock: socket.socket | None = None

    @property
    def port(self) -> int:
        return self._sock.getsockname()[1] if self._sock is not None else self._port

    @property
    def base_url(self) -> str:
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{self.port}"

    @property
    def url(self) -> str:
        return self.base_url + MCP_PATH

    async def start(self) -> None:
        """Open the service, bind the socket, and return once uvicorn accepts connections.

        Raises OSError when the address cannot be bound, RuntimeError when the server fails to start
        or must not (a non-loopback address without MCP_AUTH_TOKEN, see :mod:`msev15.mcpkit.auth`).
        """
        refusal = bind_refusal(self.host, self.settings.mcp_auth_token, self.settings.mcp_allow_unauthenticated)
        if refusal:
            raise RuntimeError(refusal)
        extra = {} if self._clock is None else {"clock": self._clock}
        self.service = await EscalationService.open(self.settings, backend=self._backend, templates=self._templates,
                                                    **extra)
        try:
            self._sock = bind_socket(self.host, self._port)
            app = build_mcp_server(self.service).streamable_http_app(streamable_http_path=MCP_PATH, host=self.host)
            self._http = McpHttpServer(app, handle_signals=self._handle_signals, log_level=self.settings.log_level,
                                       graceful_timeout=self.settings.email_timeout_seconds + 5,
                                       auth_token=self.settings.mcp_auth_token, telemetry=self.telemetry)
            self._task = asyncio.create_task(self._serve(), name="escalation-http")
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 30
            # uvicorn exposes readiness only as a flag; the bound socket already queues connections.
            while not self._http.started:
                if self._task.done() or loop.time() > deadline:
                    raise RuntimeError("the EscalationComms HTTP server failed to start")
                await asyncio.sleep(0.01)
        except BaseException:
            await self.stop()
            raise
        log.info("EscalationComms MCP service %s (profile %s) listening on %s", __version__, self.settings.profile,
                 self.url)

    async def _serve(self) -> None:
        assert self._http is not None and self._sock is not None
        try:
            await self._http.serve(sockets=[self._sock])
        except SystemExit as exc:  # uvicorn's way of saying the app did not start
            log.error("HTTP server exited during start-up (code %s)", exc.code)

    async def wait_closed(self) -> None:
        """Until the HTTP server stops (a signal, when ``handle_signals``)."""
        if self._task is not None:
            await asyncio.wait({self._task})  # waiting is cancellable; the server task is not cancelled by it

    async def stop(self) -> None:
        """Stop serving, let in-flight calls finish (bounded), close the service. Idempotent."""
        if self._http is not None:
            self._http.should_exit = True
        if self._task is not None:
            await self._task
            self._task = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self.service is not None:
            await self.service.close()
            self.service = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()
