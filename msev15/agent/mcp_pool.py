"""Connections to the tenants' own MCP servers (agent profiles), pooled and bounded.

A tenant's profile may name MCP servers. Their connections are shared by every turn (and
every tenant) naming the same server with the same headers: pooled per ``(url, headers)``,
opened on first use, closed after ``idle_seconds`` unused, at most ``max_connections`` open in
all. Opening one more closes the least recently used idle connection; when every connection is
busy the call fails at once with a tool error that says so (nothing waits for a free slot).

Each connection is an :class:`~msev15.agent.mcp_client.McpConnection` (its reconnects, tool-list
refresh, tenant ``_meta`` and traceparent injection), and each server has its own
:class:`Breaker`: after ``threshold`` failures in a row (no connection within the connect
timeout, no answer within the call timeout, connection lost) its tools are left out of turns and
its calls fail at once for ``cooldown`` seconds. A dead or hanging server so costs only the turns
of the tenants that name it.

Naming: a tenant server's tool keeps its own name unless a built-in tool (or an earlier server of
the same profile) has it; then it is published as ``f"{server}_{tool}"``, and skipped (logged) if
that name is taken too. A tenant tool never shadows a built-in one.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import sys
import time
from collections import OrderedDict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any

from msev15.agent.tools.registry import Tool, ToolContext, ToolError, ToolFunc

if TYPE_CHECKING:  # the mcp package: imported when the first tenant server is opened
    from msev15.agent.mcp_client import CallSpans, McpConnection

log = logging.getLogger("agent.mcp")

PoolKey = tuple[str, tuple[tuple[str, str], ...]]


@dataclass(frozen=True, slots=True)
class TenantServer:
    """One MCP server of a profile, its headers already resolved (``env:`` values read)."""

    name: str
    url: str
    headers: tuple[tuple[str, str], ...] = ()
    tools: tuple[str, ...] = ()  # fnmatch patterns of the server's tools to offer; empty: all

    @property
    def key(self) -> PoolKey:
        return (self.url, self.headers)

    def offers(self, remote_name: str) -> bool:
        return not self.tools or any(fnmatchcase(remote_name, p) for p in self.tools)


def _import_client() -> None:
    importlib.import_module("msev15.agent.mcp_client")


class PoolFull(Exception):
    """Every pooled connection is busy: no slot for one more server."""


@dataclass(slots=True)
class Breaker:
    """Open after ``threshold`` failures in a row, for ``cooldown`` seconds; then one try."""

    threshold: int
    cooldown: float
    failures: int = 0
    open_until: float = 0.0

    def allows(self, now: float) -> bool:
        return now >= self.open_until

    def success(self) -> None:
        self.failures, self.open_until = 0, 0.0

    def failure(self, now: float) -> None:
        self.failures += 1
        if self.failures >= self.threshold:
            self.open_until = now + self.cooldown


@dataclass(slots=True)
class _Entry:
    connection: McpConnection
    busy: int = 0
    last_used: float = field(default_factory=time.monotonic)
    # (server name, patterns, reserved) -> (the specs they were built from, the tools)
    views: dict[tuple[str, tuple[str, ...], frozenset[str]], tuple[tuple[Any, ...], tuple[Tool, ...]]] = \
        field(default_factory=dict)


class McpPool:
    def __init__(self, *, max_connections: int, idle_seconds: float, call_timeout: float,
                 connect_timeout: float, breaker_threshold: int = 3, breaker_cooldown: float = 30.0,
                 backoff_initial: float = 0.5, backoff_max: float = 30.0) -> None:
        self.max_connections = max_connections
        self.idle_seconds = idle_seconds
        self.call_timeout = call_timeout
        self.connect_timeout = connect_timeout
        self.breaker_threshold = breaker_threshold
        self.breaker_cooldown = breaker_cooldown
        self.backoff = (backoff_initial, backoff_max)
        self.spans: CallSpans | None = None  # set when tracing is on
        self._entries: OrderedDict[PoolKey, _Entry] = OrderedDict()  # least recently used first
        self._breakers: dict[PoolKey, Breaker] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._reaper: asyncio.Task[None] | None = None
        self._closed = False
        self._loaded: asyncio.Future[None] | None = None

    async def _load(self) -> None:
        """Import the MCP SDK (about a second of CPU) in a worker thread, once: the event loop keeps
        serving other tenants meanwhile, and only the turns that need a tenant server wait for it."""
        if "msev15.agent.mcp_client" in sys.modules:
            return
        if self._loaded is None:
            self._loaded = asyncio.ensure_future(asyncio.to_thread(_import_client))
        await asyncio.shield(self._loaded)

    # --- what turns use ---------------------------------------------------------------------

    async def tools(self, servers: Sequence[TenantServer], reserved: Collection[str]) -> list[Tool]:
        """The tools of ``servers`` now, named around ``reserved`` (the built-in tools). A server
        that is not connected within the connect timeout, or whose breaker is open, adds none."""
        if servers:
            await self._load()
        listed = await asyncio.gather(*(self._server_specs(s) for s in servers))
        taken = set(reserved)
        found: list[Tool] = []
        for server, entry in zip(servers, listed, strict=True):
            if entry is None:
                continue
            tools = self._view(server, entry, frozenset(taken))
            taken.update(t.name for t in tools)
            found.extend(tools)
        return found

    async def call(self, server: TenantServer, remote: str, args: dict[str, Any], tenant_id: str) -> Any:
        """Call ``remote`` on ``server`` for ``tenant_id``. Raises :class:`ToolError` for every failure."""
        now = time.monotonic()
        breaker = self._breakers.get(server.key)
        entry = self._entries.get(server.key)
        if breaker is not None and not breaker.allows(now) and not (
                entry is not None and entry.connection.status == "connected"):
            raise ToolError(f"{server.name} server unavailable (it failed {breaker.failures} times in a row; "
                            f"retrying after {breaker.open_until - now:.0f}s)")
        await self._load()
        try:
            entry = self._open(server)
        except PoolFull:
            raise ToolError(f"{server.name} server unavailable: all {self.max_connections} MCP connections are busy; "
                            "retry shortly") from None
        entry.busy += 1
        ok = False
        try:
            async with asyncio.timeout(self.call_timeout):
                value = await entry.connection.call_tool(remote, args, tenant_id=tenant_id)
            ok = True
            return value
        except TimeoutError:
            raise ToolError(f"{server.name} server did not answer within {self.call_timeout:g}s") from None
        except ToolError as exc:
            ok = not str(exc).startswith(f"{server.name} server unavailable")  # else the server answered
            raise
        finally:
            entry.busy -= 1
            entry.last_used = time.monotonic()
            self._outcome(server.key, ok)

    # --- the pool ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._entries)

    def is_open(self, server: TenantServer) -> bool:
        return server.key in self._entries

    def breaker(self, server: TenantServer) -> Breaker | None:
        return self._breakers.get(server.key)

    def start(self) -> None:
        if self._reaper is None:
            self._reaper = asyncio.get_running_loop().create_task(self._reap_idle(), name="mcp-pool:idle")

    async def close(self) -> None:
        """Close every connection and wait for them. Idempotent."""
        self._closed = True
        reaper, self._reaper = self._reaper, None
        if reaper is not None:
            reaper.cancel()
            await asyncio.gather(reaper, return_exceptions=True)
        while self._entries:
            self._drop(next(iter(self._entries)))
        while self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    async def _server_specs(self, server: TenantServer) -> _Entry | None:
        now = time.monotonic()
        breaker = self._breakers.get(server.key)
        entry = self._entries.get(server.key)
        connected = entry is not None and entry.connection.status == "connected"
        if breaker is not None and not breaker.allows(now) and not connected:
            return None
        try:
            entry = self._open(server)
        except PoolFull:
            log.warning("MCP pool full (%d busy connections): %s left out of this turn", self.max_connections,
                        server.name)
            return None
        except ToolError:  # shutting down
            return None
        entry.busy += 1
        try:
            ok = await entry.connection.wait_connected(self.connect_timeout)
        finally:
            entry.busy -= 1
            entry.last_used = time.monotonic()
        self._outcome(server.key, ok)
        return entry if ok else None

    def _view(self, server: TenantServer, entry: _Entry, reserved: frozenset[str]) -> tuple[Tool, ...]:
        """The server's offered tools under their local names, rebuilt only when its listing changed."""
        specs = entry.connection.specs()
        view_key = (server.name, server.tools, reserved)
        cached = entry.views.get(view_key)
        if cached is not None and cached[0] is specs:
            return cached[1]
        from msev15.agent.mcp_tools import local_tools

        offered = [s for s in specs if server.offers(s.name)]
        tools = local_tools(offered, server=server.name, prefix=server.name, reserved=reserved,
                            previous=cached[1] if cached else (), make_func=lambda remote: self._func(server, remote))
        if len(entry.views) > 64:  # one entry per (name, patterns, built-ins) in use: bounded anyway
            entry.views.clear()
        entry.views[view_key] = (specs, tools)
        return tools

    def _func(self, server: TenantServer, remote: str) -> ToolFunc:
        async def call(ctx: ToolContext, args: dict[str, Any]) -> Any:
            return await self.call(server, remote, args, ctx.tenant_id)

        call.__name__ = f"mcp_{remote}"
        return call

    def _outcome(self, key: PoolKey, ok: bool) -> None:
        if ok:
            self._breakers.pop(key, None)
            return
        breaker = self._breakers.get(key)
        if breaker is None:
            breaker = self._breakers[key] = Breaker(self.breaker_threshold, self.breaker_cooldown)
        breaker.failure(time.monotonic())
        if breaker.failures == self.breaker_threshold:
            log.warning("MCP server %s: %d failures in a row; left out for %.0fs", key[0], breaker.failures,
                        self.breaker_cooldown)

    def _open(self, server: TenantServer) -> _Entry:
        if self._closed:
            raise ToolError(f"{server.name} server unavailable: the service is shutting down")
        entry = self._entries.get(server.key)
        if entry is not None:
            self._entries.move_to_end(server.key)
            return entry
        if len(self._entries) >= self.max_connections:
            idle = next((k for k, e in self._entries.items() if e.busy == 0), None)
            if idle is None:
                raise PoolFull
            self._drop(idle)
        from msev15.agent.mcp_client import McpConnection

        connection = McpConnection(server.name, server.url, headers=dict(server.headers),
                                   call_timeout=self.call_timeout, backoff_initial=self.backoff[0],
                                   backoff_max=self.backoff[1])
        connection.spans = self.spans
        connection.start()
        entry = self._entries[server.key] = _Entry(connection)
        return entry

    def _drop(self, key: PoolKey) -> None:
        entry = self._entries.pop(key)
        task = asyncio.get_running_loop().create_task(entry.connection.close(), name="mcp-pool:close")
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _idle(self, now: float) -> Iterable[PoolKey]:
        return [k for k, e in self._entries.items() if e.busy == 0 and now - e.last_used >= self.idle_seconds]

    async def _reap_idle(self) -> None:
        interval = max(0.05, min(self.idle_seconds / 2, 30.0))
        while True:
            await asyncio.sleep(interval)
            for key in self._idle(time.monotonic()):
                log.info("MCP server %s idle for %.0fs: connection closed", key[0], self.idle_seconds)
                self._drop(key)
