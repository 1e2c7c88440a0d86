"""An MCP server's tools as the agent's :class:`~msev15.agent.tools.registry.Tool` objects.

:func:`list_server_tools` fetches every page of the server's tool list; :func:`local_tools` gives
each tool a name the model's tools API accepts and that no other tool has taken. Used by
:class:`msev15.agent.mcp_client.McpConnection`, which supplies the function that calls a tool.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

import mcp_types
from mcp import Client

from msev15.agent.tools.registry import Tool, ToolFunc
from msev15.mcpkit.capabilities import capability_of

log = logging.getLogger("agent.mcp")

_NAME_RE = re.compile(r"[^A-Za-z0-9_-]")
_MAX_NAME = 64  # what the OpenAI tools API accepts


async def list_server_tools(client: Client) -> list[mcp_types.Tool]:
    specs: list[mcp_types.Tool] = []
    cursor: str | None = None
    for _ in range(100):  # a paginator that never ends must not hang us
        page = await client.list_tools(cursor=cursor)
        specs.extend(page.tools)
        cursor = page.next_cursor
        if cursor is None:
            break
    return specs


def local_tools(specs: Iterable[mcp_types.Tool], *, server: str, prefix: str, reserved: Collection[str],
                previous: Iterable[Tool], make_func: Callable[[str], ToolFunc]) -> tuple[Tool, ...]:
    """The server's tools under local names; ``make_func(remote_name)`` builds each tool's function.

    A name in ``reserved`` gets ``f"{prefix}_"`` in front; a tool whose name still clashes is
    skipped (and logged). A tool unchanged from ``previous`` is reused as it is.
    """
    by_name = {tool.name: tool for tool in previous}
    tools: list[Tool] = []
    taken: set[str] = set()
    for spec in specs:
        local = _NAME_RE.sub("_", spec.name)
        if local in reserved:
            local = f"{_NAME_RE.sub('_', prefix)}_{local}"
        local = local[:_MAX_NAME]
        if local in taken or local in reserved:
            log.warning("MCP server %s: skipping tool %r, its name clashes with another tool", server, spec.name)
            continue
        description = spec.description or spec.title or spec.name
        schema: Mapping[str, Any] = spec.input_schema or {"type": "object", "properties": {}}
        old = by_name.get(local)
        capability = capability_of(spec.name, spec.meta)
        if old is not None and (old.description, dict(old.parameters), old.capability) == (description, schema,
                                                                                              capability):
            tool = old  # unchanged: keep the object (and anything cached against it)
        else:
            tool = Tool(local, description, schema, make_func(spec.name), source=server, capability=capability)
        taken.add(local)
        tools.append(tool)
    return tuple(tools)
