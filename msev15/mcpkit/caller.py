"""Who is calling one of the project's MCP tools, read from the request's ``_meta``.

Both MCP servers (complaints, escalation) take the tenant and the call's idempotency key from
there (:mod:`msev15.mcpkit.meta`), never from tool arguments. A malformed value is refused with
the SDK's ``ToolError``, so the client gets an error result it can read.
"""

from __future__ import annotations

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError

from msev15.mcpkit.meta import idempotency_key_from_meta, tenant_from_meta


def caller_tenant(ctx: Context) -> str:
    """The calling tenant ("default" without one)."""
    try:
        return tenant_from_meta(ctx.request_context.meta)
    except ValueError as exc:
        raise ToolError(str(exc)) from None


def caller(ctx: Context) -> tuple[str, str | None]:
    """The calling tenant and the call's idempotency key (None without one), for tools that act."""
    tenant_id = caller_tenant(ctx)
    try:
        return tenant_id, idempotency_key_from_meta(ctx.request_context.meta)
    except ValueError as exc:
        raise ToolError(str(exc)) from None
