"""Calling our MCP servers' tools as a given tenant (the service sends it in ``_meta``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from mcp import Client
from mcp_types import CallToolResult, RequestParamsMeta, TextContent

from msev15.mcpkit.meta import TENANT_META_KEY


def as_meta(fields: Mapping[str, object]) -> RequestParamsMeta:
    """``fields`` as the SDK's ``_meta`` type. It is an open map (PEP 728 ``extra_items``), which
    mypy cannot check key by key, so it is a cast, as in the service's own MCP client."""
    return cast(RequestParamsMeta, fields)


def first_text(result: CallToolResult) -> str:
    """The text of a result's first content block (which must be text)."""
    block = result.content[0]
    assert isinstance(block, TextContent), block
    return block.text


async def call_as(client: Client, tool: str, tenant: object | None, **args: Any) -> CallToolResult:
    """``tenant=None`` sends no key at all (the server's default tenant)."""
    meta = None if tenant is None else as_meta({TENANT_META_KEY: tenant})
    return await client.call_tool(tool, args, meta=meta)


async def ok_as(client: Client, tool: str, tenant: object | None, **args: Any) -> dict[str, Any]:
    result = await call_as(client, tool, tenant, **args)
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


async def error_as(client: Client, tool: str, tenant: object | None, **args: Any) -> str:
    """The error result's text (the SDK's "Error executing tool X: " prefix included)."""
    result = await call_as(client, tool, tenant, **args)
    assert result.is_error, result.structured_content
    return "\n".join(block.text for block in result.content if isinstance(block, TextContent))
