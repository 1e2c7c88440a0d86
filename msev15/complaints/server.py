"""The reference complaints MCP server: six tools over a :class:`ComplaintStore`.

Tools are synchronous on purpose: ``MCPServer`` runs them in worker threads, which is where
blocking SQLite calls belong. Refused requests raise the SDK's ``ToolError`` so the client gets an
``is_error`` result with a readable message; anything else is a crash the SDK logs with its
traceback and reports to the client without internals.

Complaints belong to tenants. The tenant comes from the request's ``_meta`` (key
:data:`~msev15.mcpkit.meta.TENANT_META_KEY`, set by the service from the turn), never from a
tool argument: tool schemas are shown to the model, and a tenant argument would let a prompt pick
any tenant. A call without the key works in tenant "default"; a malformed tenant is refused.
The four tools that change complaints honour the call's idempotency key (:mod:`msev15.mcpkit.meta`):
a retried call answers with the complaint instead of changing it twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, TypeVar

import anyio.to_thread
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.subscriptions import ListenHandler
from pydantic import Field
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from msev15 import __version__
from msev15.mcpkit import capabilities as caps
from msev15.mcpkit.caller import caller, caller_tenant
from msev15.mcpkit.capabilities import capability_meta

from .models import (
    MAX_ID_CHARS,
    MAX_TEXT_CHARS,
    Category,
    Complaint,
    ComplaintError,
    Priority,
    SearchResult,
    Status,
)
from .store import MAX_SEARCH_LIMIT, ComplaintStore

log = logging.getLogger("complaints.server")

SERVER_NAME = "complaints"
MCP_PATH = "/mcp"

_T = TypeVar("_T")

ComplaintId = Annotated[str, Field(min_length=1, max_length=32, description="Complaint id, e.g. CMP-1A2B3C4D.")]
CustomerId = Annotated[str, Field(min_length=1, max_length=MAX_ID_CHARS, description="The customer's id.")]
OrderId = Annotated[str, Field(min_length=1, max_length=MAX_ID_CHARS, description="An order id, e.g. ORD-1001.")]
Text = Annotated[str, Field(min_length=1, max_length=MAX_TEXT_CHARS)]

_INSTRUCTIONS = (
    "Customer complaints. Register a complaint with register_complaint, look one up with get_complaint, "
    "find complaints with search_complaints, change details or start work with update_complaint, close one "
    "with resolve_complaint and retire it with archive_complaint. Statuses move open -> in_progress -> "
    "resolved -> archived; a resolved complaint can be reopened (in_progress); archived is final."
)


@contextmanager
def _root_logging_kept() -> Iterator[None]:
    """``MCPServer()`` calls ``logging.basicConfig`` for the whole process; undo it so the
    process keeps whatever logging its entry point configured (or none)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)


def _refused(call: Callable[[], _T]) -> _T:
    try:
        return call()
    except ComplaintError as exc:
        raise ToolError(str(exc)) from exc


def build_server(store: ComplaintStore, *, name: str = SERVER_NAME) -> MCPServer:
    """The MCP server with the six complaint tools and a ``GET /health`` route."""
    with _root_logging_kept():
        server: MCPServer = MCPServer(name, version=__version__, instructions=_INSTRUCTIONS)

    @server.tool(meta=capability_meta(caps.COMPLAINT_REGISTER))
    def register_complaint(
        customer_id: CustomerId,
        description: Annotated[Text, Field(description="What went wrong, in the customer's words.")],
        category: Category = "other",
        priority: Priority = "medium",
        order_id: Annotated[OrderId | None, Field(description="The order concerned, if any.")] = None,
        *,
        ctx: Context,
    ) -> Complaint:
        """Register a new customer complaint. It starts in status "open" and gets an id like CMP-1A2B3C4D."""
        tenant_id, key = caller(ctx)
        return _refused(lambda: store.register(
            customer_id=customer_id, description=description, category=category, priority=priority,
            order_id=order_id, tenant_id=tenant_id, idempotency_key=key,
        ))

    @server.tool(meta=capability_meta(caps.COMPLAINT_GET))
    def get_complaint(complaint_id: ComplaintId, *, ctx: Context) -> Complaint:
        """Get one complaint by its id."""
        tenant_id = caller_tenant(ctx)
        return _refused(lambda: store.get(complaint_id, tenant_id=tenant_id))

    @server.tool(meta=capability_meta(caps.COMPLAINT_SEARCH))
    def search_complaints(
        customer_id: CustomerId | None = None,
        order_id: OrderId | None = None,
        status: Status | None = None,
        category: Category | None = None,
        priority: Priority | None = None,
        query: Annotated[Text | None, Field(description="Text to find in the description.")] = None,
        limit: Annotated[int, Field(ge=1, le=MAX_SEARCH_LIMIT, description="Most complaints returned.")] = 20,
        *,
        ctx: Context,
    ) -> SearchResult:
        """Find complaints matching all the given filters, newest first. With no filter, the latest complaints."""
        tenant_id = caller_tenant(ctx)
        return _refused(lambda: store.search(
            tenant_id=tenant_id, customer_id=customer_id, order_id=order_id, status=status, category=category,
            priority=priority, text=query, limit=limit,
        ))

    @server.tool(meta=capability_meta(caps.COMPLAINT_UPDATE))
    def update_complaint(
        complaint_id: ComplaintId,
        description: Text | None = None,
        category: Category | None = None,
        priority: Priority | None = None,
        order_id: OrderId | None = None,
        status: Annotated[Status | None, Field(
            description='Only "in_progress" here: it starts work on an open complaint or reopens a resolved one. '
                        "Use resolve_complaint and archive_complaint for those changes.",
        )] = None,
        *,
        ctx: Context,
    ) -> Complaint:
        """Change a complaint's details and/or move it to in_progress. Archived complaints cannot change."""
        tenant_id, key = caller(ctx)
        return _refused(lambda: store.update(
            complaint_id, tenant_id=tenant_id, description=description, category=category, priority=priority,
            order_id=order_id, status=status, idempotency_key=key,
        ))

    @server.tool(meta=capability_meta(caps.COMPLAINT_RESOLVE))
    def resolve_complaint(
        complaint_id: ComplaintId,
        resolution: Annotated[Text, Field(description="How the complaint was resolved.")],
        *,
        ctx: Context,
    ) -> Complaint:
        """Resolve an open or in-progress complaint, recording how it was resolved."""
        tenant_id, key = caller(ctx)
        return _refused(lambda: store.resolve(complaint_id, resolution, tenant_id=tenant_id, idempotency_key=key))

    @server.tool()
    def archive_complaint(complaint_id: ComplaintId, *, ctx: Context) -> Complaint:
        """Archive a complaint (from any status but archived). Archived complaints are final."""
        tenant_id, key = caller(ctx)
        return _refused(lambda: store.archive(complaint_id, tenant_id=tenant_id, idempotency_key=key))

    # mcp's custom_route() has no return annotation, so mypy would take the route as untyped.
    @server.custom_route("/health", methods=["GET"])  # type: ignore[untyped-decorator]
    async def health(request: Request) -> Response:
        try:
            await anyio.to_thread.run_sync(store.ping)
        except Exception as exc:  # health must answer, whatever broke
            log.warning("health check failed: %s", exc)
            return JSONResponse({"status": "unavailable", "server": name, "detail": str(exc)}, status_code=503)
        return JSONResponse({"status": "ok", "server": name})

    return server


def build_app(server: MCPServer, *, host: str = "127.0.0.1", path: str = MCP_PATH) -> Starlette:
    """A fresh Streamable HTTP ASGI app for ``server``.

    Each app owns a session manager that can run only once, so a server that is stopped and
    started again needs a new app. ``host`` is the bound interface: on loopback the SDK turns on
    DNS-rebinding protection (Host/Origin must be loopback).
    """
    return server.streamable_http_app(streamable_http_path=path, host=host)


def close_listen_streams(server: MCPServer) -> None:
    """End every open ``subscriptions/listen`` stream gracefully (before a shutdown).

    Long-lived listen streams would otherwise hold the HTTP server's graceful shutdown open
    until its timeout; a graceful close tells clients the server left on purpose.
    """
    try:
        entry = server.session_manager.app.get_request_handler("subscriptions/listen")
    except RuntimeError:  # no app built yet: nothing is open
        return
    handler: Any = entry.handler if entry is not None else None
    if isinstance(handler, ListenHandler):
        handler.close()
