"""McpConnection against real MCP servers on loopback: discovery, calls, outages and recovery."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.subscriptions import InMemorySubscriptionBus, ToolsListChanged

from msev15.agent.mcp_client import McpConnection
from msev15.agent.tools.registry import ToolContext, ToolError, ToolRegistry
from msev15.mcpkit.meta import IDEMPOTENCY_META_KEY, TENANT_META_KEY, idempotency_key_from_meta

from .server import McpTestServer, eventually, running_complaints_server, running_mcp_server

CTX = ToolContext(tenant_id="default", session_id="s1", request_id="r1")
FAST: dict[str, Any] = {"backoff_initial": 0.02, "backoff_max": 0.1}
COMPLAINT_TOOLS = ["register_complaint", "get_complaint", "search_complaints", "update_complaint",
                   "resolve_complaint", "archive_complaint"]


@pytest.fixture
async def connection(complaints_server: McpTestServer) -> AsyncIterator[McpConnection]:
    conn = McpConnection("complaints", complaints_server.url, call_timeout=5.0, **FAST)
    conn.start()
    try:
        assert await conn.wait_connected(5.0), conn.last_error
        yield conn
    finally:
        await conn.close()


def _tool(conn: McpConnection, name: str) -> Any:
    return {tool.name: tool for tool in conn.tools()}[name]


async def _register(conn: McpConnection, **overrides: Any) -> dict[str, Any]:
    args = {"customer_id": "CUST-1", "description": "Arrived broken"} | overrides
    return await _tool(conn, "register_complaint").func(CTX, args)


def _slow_server() -> tuple[MCPServer, asyncio.Event, asyncio.Event, list[tuple[int, str | None]]]:
    """A server whose first ``slow`` call blocks until ``gate`` is set; later calls return at once.

    ``calls`` records each call's ``x`` and idempotency key.
    """
    server = MCPServer("slow")
    entered, gate, calls = asyncio.Event(), asyncio.Event(), []

    @server.tool()
    async def slow(x: int, *, ctx: Context) -> dict[str, int]:
        """Echo x, slowly the first time."""
        calls.append((x, idempotency_key_from_meta(ctx.request_context.meta)))
        if len(calls) == 1:
            entered.set()
            await gate.wait()
        return {"x": x, "call": len(calls)}

    return server, entered, gate, calls


# --- discovery and calls ----------------------------------------------------------------------


async def test_discovers_the_servers_tools_with_their_schemas(connection: McpConnection) -> None:
    assert connection.status == "connected" and connection.last_error is None
    tools = connection.tools()
    assert [tool.name for tool in tools] == COMPLAINT_TOOLS
    assert {tool.source for tool in tools} == {"complaints"}
    register = _tool(connection, "register_complaint")
    assert register.description.startswith("Register a new customer complaint")
    assert register.parameters["properties"]["priority"]["enum"] == ["low", "medium", "high", "urgent"]
    assert register.openai_schema()["function"]["name"] == "register_complaint"


async def test_calls_return_structured_content(connection: McpConnection) -> None:
    created = await _register(connection, category="delivery")
    assert created["status"] == "open" and created["category"] == "delivery"
    fetched = await _tool(connection, "get_complaint").func(CTX, {"complaint_id": created["id"]})
    assert fetched == created


async def test_error_result_raises_tool_error_with_the_servers_message(connection: McpConnection) -> None:
    with pytest.raises(ToolError, match=r"^complaint CMP-DEADBEEF not found$"):
        await _tool(connection, "get_complaint").func(CTX, {"complaint_id": "CMP-DEADBEEF"})


async def test_illegal_transition_reaches_the_caller(connection: McpConnection) -> None:
    complaint_id = (await _register(connection))["id"]
    await connection.call_tool("archive_complaint", {"complaint_id": complaint_id})
    with pytest.raises(ToolError, match=r"cannot change complaint .* from archived to resolved"):
        await connection.call_tool("resolve_complaint", {"complaint_id": complaint_id, "resolution": "late"})


async def test_unknown_tool_is_a_tool_error(connection: McpConnection) -> None:
    with pytest.raises(ToolError, match="no_such_tool"):
        await connection.call_tool("no_such_tool", {})


async def test_tools_work_through_the_tool_registry(connection: McpConnection) -> None:
    registry = ToolRegistry(timeout=5.0)
    registry.add_source(connection.tools)
    assert len(registry) == 6
    ok = await registry.call("register_complaint", json.dumps({"customer_id": "C9", "description": "Late"}), CTX)
    assert ok.ok and json.loads(ok.content)["customer_id"] == "C9"
    bad_schema = await registry.call("register_complaint", {"customer_id": "C9", "description": "x",
                                                            "priority": "asap"}, CTX)
    assert not bad_schema.ok and "priority" in json.loads(bad_schema.content)["error"]
    missing = await registry.call("get_complaint", {"complaint_id": "CMP-00000000"}, CTX)
    assert json.loads(missing.content) == {"error": "complaint CMP-00000000 not found"}


async def test_text_results_are_returned_as_text_or_parsed_json() -> None:
    server = MCPServer("texts")

    @server.tool(structured_output=False)
    def plain() -> str:
        """Plain text."""
        return "hello there"

    @server.tool(structured_output=False)
    def json_text() -> str:
        """JSON as text."""
        return '{"a": 1}'

    async with running_mcp_server(server) as running:
        conn = McpConnection("texts", running.url, **FAST)
        conn.start()
        try:
            assert await conn.wait_connected(5.0)
            assert await conn.call_tool("plain", {}) == "hello there"
            assert await conn.call_tool("json_text", {}) == {"a": 1}
        finally:
            await conn.close()


# --- the caller's tenant ----------------------------------------------------------------------


def _meta_echo_server() -> MCPServer:
    server = MCPServer("echo")

    @server.tool()
    def whoami(*, ctx: Context) -> dict[str, Any]:
        """Report the request's _meta keys that are not the protocol's own."""
        meta = ctx.request_context.meta or {}
        return {"meta": {k: v for k, v in meta.items() if not k.startswith("io.modelcontextprotocol/")}}

    return server


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_tool_calls_carry_the_turns_tenant_in_meta(mode: str) -> None:
    async with running_mcp_server(_meta_echo_server()) as running:
        conn = McpConnection("echo", running.url, mode=mode, call_timeout=5.0, **FAST)
        conn.start()
        try:
            assert await conn.wait_connected(5.0), conn.last_error
            tool = _tool(conn, "whoami")
            assert tool.parameters.get("properties", {}) == {}  # nothing for the model to set
            acme = ToolContext(tenant_id="acme", session_id="s1", request_id="r1")
            keys: list[str] = []

            def tenant_of(meta: dict[str, Any]) -> str | None:
                """The tenant sent; every call also carries its own idempotency key."""
                rest = dict(meta)
                keys.append(rest.pop(IDEMPOTENCY_META_KEY))
                assert not set(rest) - {TENANT_META_KEY}, rest
                return rest.get(TENANT_META_KEY)

            assert tenant_of((await tool.func(acme, {}))["meta"]) == "acme"
            registry = ToolRegistry(timeout=5.0)
            registry.add_source(conn.tools)
            through_registry = await registry.call("whoami", {}, acme)
            assert tenant_of(json.loads(through_registry.content)["meta"]) == "acme"
            # A model that invents a tenant argument still runs as the turn's tenant.
            sneaky = await registry.call("whoami", {"tenant_id": "globex"}, acme)
            assert tenant_of(json.loads(sneaky.content)["meta"]) == "acme"
            assert tenant_of((await conn.call_tool("whoami", {}))["meta"]) is None  # no tenant given: none sent
            assert len(set(keys)) == 4 and all(idempotency_key_from_meta({IDEMPOTENCY_META_KEY: k}) for k in keys)
        finally:
            await conn.close()


async def test_tenant_scoped_complaints_through_the_connection(connection: McpConnection) -> None:
    acme = ToolContext(tenant_id="acme", session_id="s1", request_id="r1")
    globex = ToolContext(tenant_id="globex", session_id="s1", request_id="r2")
    created = await _tool(connection, "register_complaint").func(acme, {"customer_id": "CUST-1",
                                                                         "description": "Crushed"})
    get = _tool(connection, "get_complaint").func
    assert (await get(acme, {"complaint_id": created["id"]}))["id"] == created["id"]
    with pytest.raises(ToolError, match=rf"^complaint {created['id']} not found$"):
        await get(globex, {"complaint_id": created["id"]})
    found = await _tool(connection, "search_complaints").func(globex, {"customer_id": "CUST-1"})
    assert found["total"] == 0


# --- names ------------------------------------------------------------------------------------


async def test_colliding_names_are_prefixed(complaints_server: McpTestServer) -> None:
    conn = McpConnection("complaints", complaints_server.url, reserved_names=frozenset({"get_complaint"}), **FAST)
    conn.start()
    try:
        assert await conn.wait_connected(5.0)
        names = [tool.name for tool in conn.tools()]
        assert "get_complaint" not in names and "complaints_get_complaint" in names
        assert len(names) == 6
        with pytest.raises(ToolError, match="not found"):  # the prefixed tool still calls the server's tool
            await _tool(conn, "complaints_get_complaint").func(CTX, {"complaint_id": "CMP-00000000"})
    finally:
        await conn.close()


async def test_reserved_names_can_be_a_callable_and_prefix_configurable(complaints_server: McpTestServer) -> None:
    local = {"search_complaints"}
    conn = McpConnection("complaints", complaints_server.url, reserved_names=lambda: local, prefix="cmp", **FAST)
    conn.start()
    try:
        assert await conn.wait_connected(5.0)
        assert "cmp_search_complaints" in [tool.name for tool in conn.tools()]
    finally:
        await conn.close()


async def test_names_invalid_for_the_model_api_are_sanitized() -> None:
    server = MCPServer("odd")

    @server.tool(name="lookup.v2")
    def lookup() -> dict[str, bool]:
        """Odd name."""
        return {"ok": True}

    async with running_mcp_server(server) as running:
        conn = McpConnection("odd", running.url, **FAST)
        conn.start()
        try:
            assert await conn.wait_connected(5.0)
            assert [tool.name for tool in conn.tools()] == ["lookup_v2"]
            assert await conn.tools()[0].func(CTX, {}) == {"ok": True}
        finally:
            await conn.close()


# --- outages ----------------------------------------------------------------------------------


def _state(conn: McpConnection) -> tuple[str, str | None]:
    """(status, last_error) as they are now: read through a call, since mypy would otherwise keep
    what an earlier assert narrowed them to and call a later comparison impossible."""
    return conn.status, conn.last_error


async def test_server_down_at_start_then_up(
    complaints_db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="agent.mcp")
    async with running_complaints_server(complaints_db, start=False) as server:
        conn = McpConnection("complaints", server.url, call_timeout=10.0, **FAST)
        assert conn.status == "connecting"
        conn.start()  # returns at once: start-up never waits for the server
        try:
            await eventually(lambda: conn.status == "unavailable", "the first failed attempt")
            assert conn.tools() == [] and conn.last_error
            assert not await conn.wait_connected(0.05)
            with pytest.raises(ToolError, match=r"^complaints server unavailable: "):
                await conn.call_tool("search_complaints", {})
            await eventually(lambda: len([r for r in caplog.records if "still unavailable" in r.message]) >= 2,
                             "a few retries")

            await server.start()
            assert await conn.wait_connected(5.0)
            assert _state(conn) == ("connected", None)
            assert [tool.name for tool in conn.tools()] == COMPLAINT_TOOLS
            assert (await conn.call_tool("search_complaints", {}))["total"] == 0
        finally:
            await conn.close()
    ours = [r for r in caplog.records if r.name == "agent.mcp"]
    assert len([r for r in ours if r.levelno == logging.WARNING]) == 1  # retries are not warnings
    assert any(r.levelno == logging.INFO and "connected" in r.message for r in ours)


async def test_server_killed_mid_session_then_restarted(
    complaints_server: McpTestServer, connection: McpConnection, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="agent.mcp")
    complaint_id = (await _register(connection))["id"]

    await complaints_server.stop(abrupt=True)
    await eventually(lambda: connection.status == "unavailable", "the drop to be noticed")
    assert connection.tools() == []

    await complaints_server.start()  # same port, same database
    assert await connection.wait_connected(5.0)
    fetched = await connection.call_tool("get_complaint", {"complaint_id": complaint_id})
    assert fetched["id"] == complaint_id
    messages = [r.message for r in caplog.records if r.name == "agent.mcp"]
    assert any("lost" in m for m in messages) and any("reconnected" in m for m in messages)


async def test_graceful_server_stop_is_noticed_and_recovered(
    complaints_server: McpTestServer, connection: McpConnection
) -> None:
    await complaints_server.stop()
    await eventually(lambda: connection.status == "unavailable", "the stop to be noticed")
    await complaints_server.start()
    assert await connection.wait_connected(5.0)
    assert len(connection.tools()) == 6


async def test_call_interrupted_by_a_dropped_connection_is_retried_once() -> None:
    server, entered, gate, calls = _slow_server()
    async with running_mcp_server(server) as running:
        conn = McpConnection("slow", running.url, call_timeout=5.0, **FAST)
        conn.start()
        try:
            assert await conn.wait_connected(5.0)
            call = asyncio.create_task(conn.call_tool("slow", {"x": 7}))
            await entered.wait()
            stopping = asyncio.create_task(running.stop(abrupt=True))
            gate.set()  # let the server-side handler finish so the stop is quick
            await stopping
            assert not call.done()  # waiting for the reconnect, not failed
            await running.start()
            assert await call == {"x": 7, "call": 2}
            # The retry carries the first attempt's key: a server that keeps keys runs it once.
            (first_x, first_key), (second_x, second_key) = calls
            assert first_x == second_x == 7 and first_key is not None and second_key == first_key
            assert await conn.call_tool("slow", {"x": 8}) == {"x": 8, "call": 3}
            assert calls[2][1] not in (None, first_key)  # a new call, a new key
        finally:
            await conn.close()


async def test_call_fails_cleanly_when_the_server_stays_down() -> None:
    server, entered, gate, _ = _slow_server()
    async with running_mcp_server(server) as running:
        conn = McpConnection("slow", running.url, call_timeout=0.5, **FAST)
        conn.start()
        try:
            assert await conn.wait_connected(5.0)
            call = asyncio.create_task(conn.call_tool("slow", {"x": 1}))
            await entered.wait()
            stopping = asyncio.create_task(running.stop(abrupt=True))
            gate.set()
            await stopping
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(ToolError, match=r"^slow server unavailable: "):
                await call
            assert loop.time() - started < 2.0  # bounded by call_timeout
        finally:
            await conn.close()


# --- tool-list changes ------------------------------------------------------------------------


async def test_tool_list_change_refreshes_the_tools() -> None:
    bus = InMemorySubscriptionBus()
    server = MCPServer("dynamic", subscriptions=bus)

    @server.tool()
    def first() -> dict[str, int]:
        """The first tool."""
        return {"n": 1}

    async with running_mcp_server(server) as running:
        conn = McpConnection("dynamic", running.url, **FAST)
        conn.start()
        try:
            assert await conn.wait_connected(5.0)
            assert [tool.name for tool in conn.tools()] == ["first"]
            kept = conn.tools()[0]

            def second() -> dict[str, int]:
                """The second tool."""
                return {"n": 2}

            server.add_tool(second)
            await bus.publish(ToolsListChanged())
            await eventually(lambda: [t.name for t in conn.tools()] == ["first", "second"], "the new tool")
            assert conn.tools()[0] is kept  # unchanged tools keep their identity
            assert await conn.tools()[1].func(CTX, {}) == {"n": 2}

            server.remove_tool("first")
            await bus.publish(ToolsListChanged())
            await eventually(lambda: [t.name for t in conn.tools()] == ["second"], "the removed tool to go")
            assert conn.status == "connected"
        finally:
            await conn.close()


# --- lifecycle --------------------------------------------------------------------------------


async def test_close_leaves_no_tasks_behind(complaints_db: Path) -> None:
    before = asyncio.all_tasks()
    async with running_complaints_server(complaints_db) as server:
        conn = McpConnection("complaints", server.url, **FAST)
        conn.start()
        assert await conn.wait_connected(5.0)
        await conn.call_tool("search_complaints", {})
        assert any(task.get_name() == "mcp:complaints" for task in asyncio.all_tasks())
        await conn.close()
        assert conn.status == "unavailable" and conn.tools() == []
        assert not any(task.get_name().startswith("mcp:") for task in asyncio.all_tasks())
        await conn.close()  # idempotent
    await eventually(lambda: not (asyncio.all_tasks() - before), "every task to finish")


async def test_close_while_the_server_is_unreachable(complaints_db: Path) -> None:
    async with running_complaints_server(complaints_db, start=False) as server:
        # A backoff far longer than the test's bound: close() must interrupt the sleep, not wait
        # it out (the bound only keeps the test from hanging).
        conn = McpConnection("complaints", server.url, backoff_initial=600.0, backoff_max=600.0)
        conn.start()
        await eventually(lambda: conn.status == "unavailable", "the failed attempt")
        await asyncio.wait_for(conn.close(), 30.0)
        assert not any(task.get_name().startswith("mcp:") for task in asyncio.all_tasks())


async def test_cancelling_the_owner_task_from_outside_ends_it(connection: McpConnection) -> None:
    """As at loop shutdown: the cancellation must not be mistaken for a dropped connection."""
    (owner,) = [task for task in asyncio.all_tasks() if task.get_name() == "mcp:complaints"]
    owner.cancel()
    async with asyncio.timeout(5.0):
        await asyncio.wait({owner})
    assert owner.cancelled()
    await eventually(lambda: not any(t.get_name().startswith("mcp:") for t in asyncio.all_tasks()),
                     "the session task to end")


async def test_a_closed_connection_cannot_be_restarted(connection: McpConnection) -> None:
    await connection.close()
    with pytest.raises(RuntimeError, match="closed"):
        connection.start()


@pytest.mark.parametrize(("initial", "maximum"), [(0.0, 1.0), (2.0, 1.0)])
def test_bad_backoff_settings_are_refused(initial: float, maximum: float) -> None:
    with pytest.raises(ValueError, match="backoff"):
        McpConnection("x", "http://127.0.0.1:1/mcp", backoff_initial=initial, backoff_max=maximum)


# --- handshake-era (legacy) protocol ----------------------------------------------------------


async def test_legacy_protocol_list_changed_and_session_loss(caplog: pytest.LogCaptureFixture) -> None:
    """Older servers announce tool changes as notifications and forget sessions on restart."""
    caplog.set_level(logging.INFO, logger="agent.mcp")
    server = MCPServer("legacy")

    @server.tool()
    async def grow(ctx: Context) -> dict[str, bool]:
        """Add a tool and announce it."""

        def extra() -> dict[str, int]:
            """An extra tool."""
            return {"n": 1}

        server.add_tool(extra)
        await ctx.session.send_tool_list_changed()
        return {"grown": True}

    async with running_mcp_server(server) as running:
        conn = McpConnection("legacy", running.url, mode="legacy", call_timeout=5.0, **FAST)
        conn.start()
        try:
            assert await conn.wait_connected(5.0)
            assert await conn.call_tool("grow", {}) == {"grown": True}
            await eventually(lambda: [t.name for t in conn.tools()] == ["grow", "extra"], "the announced tool")

            await running.stop(abrupt=True)
            await running.start()  # a new process: the old session id is unknown there
            assert await conn.call_tool("extra", {}) == {"n": 1}
            assert any("Session not found" in r.message and "retrying after reconnect" in r.message
                       for r in caplog.records)
        finally:
            await conn.close()
