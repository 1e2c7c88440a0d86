"""A resilient connection to one MCP server, whose tools the agent calls like local ones.

One owner task per connection (``mcp:<name>``) enters and exits the SDK's ``Client`` — an anyio
context that must be entered and left by the same task — and publishes the connected client and
its tools. Other tasks call tools on the published client: the SDK's session multiplexes
concurrent requests, and a request whose connection goes away fails with ``CONNECTION_CLOSED``
rather than hanging.

The owner notices a lost server through a ``subscriptions/listen`` stream (2026-07-28 servers),
which also carries ``tools/list_changed``; older servers send that notification to the message
handler, and a lost connection shows up on the next call. Either way the owner reconnects with
capped, jittered exponential backoff, and the tools come back without a restart.

Every tool call carries the caller's tenant (from the turn, never from the model) out of band in
the request's ``_meta`` under :data:`TENANT_META_KEY`, so tool schemas never offer a tenant
argument a prompt could set. Servers that scope data by tenant read it there; others ignore it.
Each call also carries a fresh idempotency key (:mod:`msev15.mcpkit.meta`), the same on its one
retry after a dropped connection, so a server that keeps keys does not act twice.

This module holds the connection (:class:`McpConnection`); what a request's result or error means
is in :mod:`msev15.agent.mcp_results`, the listing and naming of the server's tools in
:mod:`msev15.agent.mcp_tools`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections.abc import Callable, Collection, Mapping
from contextlib import AbstractContextManager
from typing import Any, Literal, Protocol, cast

import anyio
import mcp_types
from anyio.abc import TaskStatus
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.client.subscriptions import ListenNotSupportedError, SubscriptionLost
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError

from msev15 import __version__
from msev15.agent.mcp_results import describe, is_connection_error, tool_result
from msev15.agent.mcp_tools import list_server_tools, local_tools
from msev15.agent.tools.registry import Tool, ToolContext, ToolError, ToolFunc
from msev15.common.ids import new_id
from msev15.mcpkit.meta import IDEMPOTENCY_META_KEY, TENANT_META_KEY

log = logging.getLogger("agent.mcp")
# Its own generator: the process-wide one's state belongs to whoever seeds it (tests, Hypothesis),
# and a reconnect loop drawing from it in the background changes it under them.
_JITTER = random.Random()
os.register_at_fork(after_in_child=_JITTER.seed)  # a forked worker must not jitter in step with its parent

McpStatus = Literal["connected", "connecting", "unavailable"]
CONNECTED: McpStatus = "connected"
CONNECTING: McpStatus = "connecting"
UNAVAILABLE: McpStatus = "unavailable"


class CallSpans(Protocol):
    """Tracing of MCP calls (agent/tracing.py's McpSpans): a span around a call, which writes the
    call's ``traceparent`` into ``meta``."""

    def call(self, server: str, url: str, tool: str, meta: dict[str, Any]) -> AbstractContextManager[Any]: ...


class McpConnection:
    """One MCP server: connection lifecycle, tool discovery and tool calls.

    ``reserved_names`` are names already taken (the local tools); a server tool with such a name
    is published as ``f"{prefix or name}_{tool}"``. ``call_timeout`` bounds one call, including
    waiting for a reconnect after a dropped connection. ``mode`` is the SDK's protocol negotiation
    (``"auto"``; ``"legacy"`` forces the handshake-era protocol). ``auth_token`` is sent as
    ``Authorization: Bearer`` on every request (the servers' MCP_AUTH_TOKEN).
    """

    def __init__(
        self,
        name: str,
        url: str,
        *,
        reserved_names: Callable[[], Collection[str]] | Collection[str] = frozenset(),
        prefix: str | None = None,
        call_timeout: float = 30.0,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        mode: str = "auto",
        auth_token: str = "",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if backoff_initial <= 0 or backoff_max < backoff_initial:
            raise ValueError("backoff needs 0 < backoff_initial <= backoff_max")
        self.name = name
        self.url = url
        self.prefix = prefix or name
        self.call_timeout = call_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.mode = mode
        self.auth_token = auth_token
        self.headers = dict(headers or {})
        self._specs: tuple[mcp_types.Tool, ...] = ()
        self._reserved = reserved_names
        self._status: McpStatus = CONNECTING
        self._last_error: str | None = None
        self._client: Client | None = None
        self._generation = 0  # bumped on every successful connect
        self._tools: tuple[Tool, ...] = ()
        self._connected = asyncio.Event()
        self._broken = asyncio.Event()
        self._refresh = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._ever_connected = False
        self._closing = False
        self.spans: CallSpans | None = None  # set when tracing is on (agent/tracing.py)

    # --- what other code reads -------------------------------------------------------------

    @property
    def status(self) -> McpStatus:
        """``connected``, ``connecting`` (before the first attempt ends) or ``unavailable``."""
        return self._status

    @property
    def last_error(self) -> str | None:
        return self._last_error

    def tools(self) -> list[Tool]:
        """The server's tools now; empty while it is unreachable."""
        return list(self._tools) if self._client is not None else []

    def specs(self) -> tuple[mcp_types.Tool, ...]:
        """The server's tools as it listed them (remote names); empty while it is unreachable."""
        return self._specs if self._client is not None else ()

    @property
    def generation(self) -> int:
        """Bumped on every successful connect (and tool-list refresh changes ``specs()``)."""
        return self._generation

    async def wait_connected(self, timeout: float) -> bool:
        """Whether the server is (or becomes) connected within ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        while self._client is None:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            try:
                async with asyncio.timeout(remaining):
                    await self._connected.wait()
            except TimeoutError:
                return self._client is not None
        return True

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Start the owner task (needs a running loop). Never blocks on the server."""
        if self._closing:
            raise RuntimeError(f"MCP connection {self.name} is closed")
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"mcp:{self.name}")

    async def close(self) -> None:
        """Stop the owner task and wait for it (and its session) to finish. Idempotent."""
        self._closing = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise
            except Exception:  # a bug in the owner loop: report it, close anyway
                log.exception("MCP connection %s failed", self.name)
        self._unpublish()
        self._status = UNAVAILABLE
        self._last_error = "closed"

    async def _run(self) -> None:
        """The owner: one session task per connection attempt, backoff in between.

        Each session task enters and leaves the SDK client itself. The owner stays outside every
        anyio scope, so its own cancellation (close(), loop shutdown) is never mistaken for a
        dropped connection: anyio's scopes uncancel the task that hosts them.
        """
        failures = 0
        while True:
            generation = self._generation
            session = asyncio.get_running_loop().create_task(self._connect_once(), name=f"mcp:{self.name}:session")
            try:
                await asyncio.wait({session})
            except asyncio.CancelledError:
                session.cancel()
                await asyncio.wait({session})
                raise
            error = self._session_error(session)
            if self._generation != generation:
                # It was connected: start the backoff afresh (its first, short step still keeps a
                # server that accepts and then drops us from spinning this loop).
                failures = 0
                self._set_unavailable(error, lost=True)
            else:
                self._set_unavailable(error)
            delay = min(self.backoff_max, self.backoff_initial * 2 ** min(failures, 32))
            delay *= _JITTER.uniform(0.5, 1.0)  # jitter: many agents must not reconnect in step
            failures += 1
            log.debug("MCP server %s: next attempt in %.2fs", self.name, delay)
            await asyncio.sleep(delay)

    def _session_error(self, session: asyncio.Task[None]) -> str:
        if session.cancelled():
            return "connection cancelled"
        exc = session.exception()
        if exc is None:
            return self._last_error or "the server closed the connection"
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise exc
        return describe(exc)

    async def _connect_once(self) -> None:
        """One connection, from handshake until it breaks. Returns or raises when it is over."""
        if not self.auth_token and not self.headers:
            await self._session(self.url)
            return
        # The server wants MCP_AUTH_TOKEN (or a tenant's headers) on every request: an HTTP client
        # that sends them, owned (opened and closed) by this task like the connection itself.
        headers = dict(self.headers)
        if self.auth_token:
            headers["Authorization"] = f"Bearer {self.auth_token}"
        async with create_mcp_http_client(headers=headers) as http:
            await self._session(streamable_http_client(self.url, http_client=http))

    async def _session(self, server: Any) -> None:
        self._broken = asyncio.Event()
        self._refresh = asyncio.Event()
        client = Client(
            server,
            message_handler=self._on_message,
            read_timeout_seconds=self.call_timeout,
            client_info=mcp_types.Implementation(name="msev15", version=__version__),
            cache=None,  # tool lists are refetched on change; no stale listings
            mode=self.mode,
        )
        async with client:
            try:
                async with anyio.create_task_group() as tg:
                    # Listen first, then list: a change between the two cannot be missed.
                    await tg.start(self._watch_listen, client)
                    self._tools = await self._list_tools(client)
                    self._publish(client)
                    tg.start_soon(self._watch_refresh, client)
                    await self._broken.wait()
                    tg.cancel_scope.cancel()
            finally:
                self._unpublish()

    def _publish(self, client: Client) -> None:
        self._client = client
        self._generation += 1
        again = self._ever_connected
        self._ever_connected = True
        self._status = CONNECTED
        self._last_error = None
        self._connected.set()
        log.info("MCP server %s %s at %s: %d tools (%s)", self.name, "reconnected" if again else "connected",
                 self.url, len(self._tools), ", ".join(t.name for t in self._tools) or "none")

    def _unpublish(self) -> None:
        self._client = None
        self._connected.clear()

    def _set_unavailable(self, error: str, *, lost: bool = False) -> None:
        first = self._status != UNAVAILABLE
        self._status = UNAVAILABLE
        self._last_error = error
        if lost:
            log.warning("MCP server %s lost (%s); reconnecting", self.name, error)
        elif first:
            log.warning("MCP server %s at %s unavailable (%s); running without its tools and retrying "
                        "in the background", self.name, self.url, error)
        else:
            log.debug("MCP server %s still unavailable: %s", self.name, error)

    def _lost(self, generation: int, error: str) -> None:
        """A caller saw connection ``generation`` break: stop using it and let the owner reconnect."""
        if generation == self._generation and self._client is not None:
            self._last_error = error
            self._unpublish()
            self._broken.set()

    # --- watching the server ----------------------------------------------------------------

    async def _on_message(self, message: Any) -> None:
        if getattr(message, "method", None) == "notifications/tools/list_changed":
            self._refresh.set()
        elif isinstance(message, Exception):
            log.debug("MCP server %s transport note: %s", self.name, describe(message))

    async def _watch_listen(self, client: Client, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Follow tool-list changes; the stream ending means the server went away.

        Reports started once the server has acknowledged the subscription (or cannot serve one).
        """
        started = False
        try:
            async with client.listen(tools_list_changed=True) as subscription:
                task_status.started()
                started = True
                async for _event in subscription:
                    self._refresh.set()
            reason = "the server closed the connection"
        except ListenNotSupportedError:
            reason = None  # older protocol: list_changed comes to _on_message, loss shows on calls
        except SubscriptionLost as exc:
            reason = f"connection lost: {describe(exc.__cause__ or exc)}"
        except MCPError as exc:
            reason = exc.message
            if exc.code != mcp_types.CONNECTION_CLOSED and not started:
                log.debug("MCP server %s does not serve subscriptions/listen: %s", self.name, exc.message)
                reason = None
        except Exception as exc:  # e.g. no acknowledgment within the read timeout
            reason = f"subscription failed: {describe(exc)}"
        if not started:
            task_status.started()
        if reason is not None:
            self._last_error = reason
            self._broken.set()

    async def _watch_refresh(self, client: Client) -> None:
        while True:
            await self._refresh.wait()
            self._refresh.clear()
            try:
                self._tools = await self._list_tools(client)
            except Exception as exc:  # a failing listing means a failing connection
                self._last_error = f"tool list refresh failed: {describe(exc)}"
                self._broken.set()
                return
            log.info("MCP server %s tools changed: %s", self.name, ", ".join(t.name for t in self._tools) or "none")

    # --- tools ------------------------------------------------------------------------------

    def _reserved_names(self) -> Collection[str]:
        return self._reserved() if callable(self._reserved) else self._reserved

    async def _list_tools(self, client: Client) -> tuple[Tool, ...]:
        specs = await list_server_tools(client)
        self._specs = tuple(specs)
        return local_tools(specs, server=self.name, prefix=self.prefix, reserved=self._reserved_names(),
                           previous=self._tools, make_func=self._tool_func)

    def _tool_func(self, remote: str) -> ToolFunc:
        async def call(ctx: ToolContext, args: dict[str, Any]) -> Any:
            return await self.call_tool(remote, args, tenant_id=ctx.tenant_id, idempotency_key=ctx.idempotency_key)

        call.__name__ = f"mcp_{remote}"
        return call

    async def call_tool(self, remote_name: str, args: dict[str, Any], *, tenant_id: str | None = None,
                        idempotency_key: str | None = None) -> Any:
        """Call a tool by its server-side name: structured content, else text.

        ``tenant_id`` goes in the request's ``_meta`` (:data:`TENANT_META_KEY`); without it the
        server applies its own default (the reference complaints server uses tenant "default").

        Raises :class:`ToolError` for an error result, a refused request, or a server that stays
        unreachable. A call that fails because the connection dropped is retried once after
        reconnecting, within ``call_timeout``, with the same idempotency key in ``_meta``: a fresh
        one, or ``idempotency_key`` when the caller retries across calls (the handoff timeout).
        """
        fields: dict[str, Any] = {IDEMPOTENCY_META_KEY: idempotency_key or new_id()}
        if tenant_id is not None:
            fields[TENANT_META_KEY] = tenant_id
        if self.spans is None:
            return await self._call_tool(remote_name, args, fields)
        with self.spans.call(self.name, self.url, remote_name, fields):  # adds the traceparent to _meta
            return await self._call_tool(remote_name, args, fields)

    async def _call_tool(self, remote_name: str, args: dict[str, Any], fields: dict[str, Any]) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.call_timeout
        error = self._last_error or "not connected"
        meta = cast(mcp_types.RequestParamsMeta, fields)
        for attempt in range(2):
            if not await self.wait_connected(deadline - loop.time()):
                break
            client, generation = self._client, self._generation
            if client is None:
                continue
            try:
                result = await client.call_tool(remote_name, args, meta=meta)
            except Exception as exc:
                if not is_connection_error(exc):
                    message = exc.message if isinstance(exc, MCPError) else describe(exc)
                    raise ToolError(f"{self.name} server could not run {remote_name}: {message}") from None
                error = describe(exc)
                log.info("MCP call %s on %s failed (%s)%s", remote_name, self.name, error,
                         "; retrying after reconnect" if attempt == 0 else "")
                self._lost(generation, error)
                continue
            return tool_result(remote_name, result)
        raise ToolError(f"{self.name} server unavailable: {self._last_error or error}")
