"""What the outcome of an MCP request means to the agent.

A tool call's result becomes a value (structured content, else JSON or plain text) or a
:class:`~msev15.agent.tools.registry.ToolError`; an exception becomes a one-line message, and
:func:`is_connection_error` tells "the connection is gone" (reconnect and retry) from "the server
said no". Used by :class:`msev15.agent.mcp_client.McpConnection`.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import anyio
import mcp_types
from mcp.shared.exceptions import MCPError

from msev15.agent.tools.registry import ToolError

# Errors that mean "the connection is gone", as opposed to "the server said no".
_TRANSPORT_ERRORS = (OSError, anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream)
_SESSION_GONE = frozenset({"Session terminated", "Session not found"})


def _leaf(exc: BaseException) -> BaseException:
    """The first interesting exception inside (possibly nested) exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        inner = [e for e in exc.exceptions if not isinstance(e, asyncio.CancelledError)]
        exc = (inner or list(exc.exceptions))[0]
    return exc


def describe(exc: BaseException) -> str:
    exc = _leaf(exc)
    if isinstance(exc, MCPError):
        return exc.message
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def is_connection_error(exc: BaseException) -> bool:
    exc = _leaf(exc)
    if isinstance(exc, MCPError):
        # A handshake-era server that restarted has forgotten our session (HTTP 404).
        return exc.code == mcp_types.CONNECTION_CLOSED or (
            exc.code == mcp_types.INVALID_REQUEST and exc.message in _SESSION_GONE
        )
    if isinstance(exc, RuntimeError) and "context manager" in str(exc):
        return True  # the SDK's "Client must be used within an async context manager": closed under us
    return isinstance(exc, _TRANSPORT_ERRORS) or type(exc).__module__.startswith(("httpx", "httpcore"))


def _content_text(result: mcp_types.CallToolResult) -> str:
    parts = []
    for block in result.content:
        text = getattr(block, "text", None)
        parts.append(text if isinstance(text, str) else f"[{getattr(block, 'type', 'non-text')} content omitted]")
    return "\n".join(parts)


def tool_result(remote_name: str, result: mcp_types.CallToolResult) -> Any:
    if result.is_error:
        text = _content_text(result) or "the tool failed"
        prefix = f"Error executing tool {remote_name}: "  # the SDK's wrapper adds nothing for the model
        raise ToolError(text.removeprefix(prefix))
    if result.structured_content is not None:
        return result.structured_content
    text = _content_text(result)
    try:
        return json.loads(text)
    except ValueError:
        return text
