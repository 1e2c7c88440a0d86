"""The tenant MCP connection pool against real servers: two complaints servers over Streamable
HTTP (one requiring a bearer token sent as a tenant header) and a server that accepts
connections and never answers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from msev15.agent.mcp_pool import McpPool, TenantServer
from msev15.agent.tools.registry import ToolContext, ToolError
from tests.complaints.server import eventually, running_complaints_server
from tests.hanging_server import hanging_server


def _pool(**overrides: float) -> McpPool:
    options: dict[str, float] = {"max_connections": 4, "idle_seconds": 300, "call_timeout": 5,
                                 "connect_timeout": 5, "breaker_threshold": 2, "breaker_cooldown": 300}
    options.update(overrides)
    return McpPool(**options)  # type: ignore[arg-type]


@pytest.fixture
async def two_servers(tmp_path: Path) -> AsyncIterator[tuple[TenantServer, TenantServer, object, object]]:
    async with running_complaints_server(tmp_path / "a.db", auth_token="tok-a") as a, \
            running_complaints_server(tmp_path / "b.db") as b:
        yield (TenantServer("acme", a.url, (("Authorization", "Bearer tok-a"),)),
               TenantServer("globex", b.url, tools=("get_*", "register_*")), a, b)


async def test_two_servers_their_tools_filtered_named_around_built_ins_and_called_for_the_tenant(
        two_servers) -> None:
    acme, globex, _a, b = two_servers
    pool = _pool()
    try:
        tools = {t.name: t for t in await pool.tools([acme, globex], reserved={"get_order_by_id", "get_complaint"})}
        # acme's get_complaint clashes with a built-in: prefixed; globex's then clashes with acme's
        # register_complaint and the built-in: prefixed too. globex offers only what its patterns allow.
        assert "acme_get_complaint" in tools and "register_complaint" in tools
        assert "globex_get_complaint" in tools and "globex_register_complaint" in tools
        assert not any(n.startswith("globex_") and "resolve" in n for n in tools)
        assert "get_complaint" not in tools and "get_order_by_id" not in tools
        assert {tools["register_complaint"].source, tools["globex_register_complaint"].source} == {"acme", "globex"}
        assert len(pool) == 2

        args = {"customer_id": "CUST-001", "order_id": "ORD-1A2B3C4D", "category": "product",
                "description": "The parcel arrived damaged"}
        made = await tools["globex_register_complaint"].func(ToolContext("t-globex", "s"), args)
        found = await tools["globex_get_complaint"].func(ToolContext("t-globex", "s"),
                                                         {"complaint_id": made["id"]})
        assert found["id"] == made["id"]
        assert b.store.get(made["id"], tenant_id="t-globex").id == made["id"]
        with pytest.raises(ToolError):  # the other server never saw it
            await tools["acme_get_complaint"].func(ToolContext("t-globex", "s"), {"complaint_id": made["id"]})
        assert pool.breaker(acme) is None  # a "not found" is the server answering
    finally:
        await pool.close()
    assert len(pool) == 0


async def test_listing_is_cached_per_connection(two_servers) -> None:
    acme, _, _, _ = two_servers
    pool = _pool()
    try:
        first = await pool.tools([acme], reserved=set())
        again = await pool.tools([acme], reserved=set())
        assert [t for t in first] == [t for t in again] and all(x is y for x, y in zip(first, again, strict=True))
    finally:
        await pool.close()


async def test_wrong_header_is_a_failure_of_that_server_only(two_servers) -> None:
    acme, globex, _, _ = two_servers
    wrong = TenantServer("acme", acme.url, (("Authorization", "Bearer nope"),))
    pool = _pool(connect_timeout=2)
    try:
        tools = await pool.tools([wrong, globex], reserved=set())
        assert tools and {t.source for t in tools} == {"globex"}
        assert pool.breaker(wrong) is not None and pool.breaker(globex) is None
        assert pool.is_open(wrong) and pool.is_open(acme) is False  # pooled per (url, headers)
    finally:
        await pool.close()


async def test_idle_connections_close_and_reopen_on_next_use(two_servers) -> None:
    acme, _, _, _ = two_servers
    pool = _pool(idle_seconds=0.2)
    pool.start()
    try:
        tools = {t.name: t for t in await pool.tools([acme], reserved=set())}
        assert pool.is_open(acme)
        await eventually(lambda: not pool.is_open(acme), "the idle connection to close")
        # A tool listed before the close still works: the call opens the connection again.
        result = await tools["search_complaints"].func(ToolContext("t", "s"), {})
        assert pool.is_open(acme) and isinstance(result, dict)
    finally:
        await pool.close()


async def test_max_connections_closes_the_least_recently_used_idle_one(two_servers) -> None:
    acme, globex, _, _ = two_servers
    pool = _pool(max_connections=1)
    try:
        assert await pool.tools([acme], reserved=set())
        assert await pool.tools([globex], reserved=set())
        assert len(pool) == 1 and pool.is_open(globex) and not pool.is_open(acme)
    finally:
        await pool.close()


async def test_all_connections_busy_is_a_clear_tool_error_not_a_wait(two_servers) -> None:
    acme, _, _, _ = two_servers
    async with hanging_server() as (url, _accepted):
        hang = TenantServer("slow", url)
        pool = _pool(max_connections=1, call_timeout=30, connect_timeout=30)
        try:
            busy = asyncio.create_task(pool.call(hang, "anything", {}, "t"))
            await eventually(lambda: pool.is_open(hang), "the hanging server's connection")
            with pytest.raises(ToolError, match="all 1 MCP connections are busy"):
                await pool.call(acme, "search_complaints", {}, "t")
            assert not busy.done()
            busy.cancel()
            await asyncio.gather(busy, return_exceptions=True)
            # Free again: the idle hanging connection makes room.
            assert await pool.call(acme, "search_complaints", {}, "t") is not None
            assert not pool.is_open(hang)
        finally:
            await pool.close()


async def test_breaker_opens_for_the_hanging_server_only(two_servers) -> None:
    acme, globex, _, _ = two_servers
    async with hanging_server() as (url, accepted):
        hang = TenantServer("slow", url)
        pool = _pool(connect_timeout=0.3, call_timeout=0.3)
        try:
            for _ in range(2):  # threshold 2: each listing waits out the connect timeout
                tools = await pool.tools([hang, acme], reserved=set())
                assert {t.source for t in tools} == {"acme"}
            assert accepted[0] >= 1
            breaker = pool.breaker(hang)
            assert breaker is not None and breaker.failures == 2
            # Open: the server is left out without waiting, its calls fail at once, the others work.
            with pytest.raises(ToolError, match="failed 2 times in a row"):
                await pool.call(hang, "anything", {}, "t")
            assert {t.source for t in await pool.tools([hang, globex], reserved=set())} == {"globex"}
            assert pool.breaker(acme) is None and pool.breaker(globex) is None
            assert await pool.call(globex, "search_complaints", {}, "t") is not None
        finally:
            await pool.close()


async def test_a_call_that_hangs_times_out_as_a_tool_error_and_counts(two_servers) -> None:
    async with hanging_server() as (url, _accepted):
        hang = TenantServer("slow", url)
        pool = _pool(call_timeout=0.3)
        try:
            with pytest.raises(ToolError, match="slow server"):
                await pool.call(hang, "anything", {}, "t")
            breaker = pool.breaker(hang)
            assert breaker is not None and breaker.failures == 1
        finally:
            await pool.close()


async def test_reconnecting_leaves_the_process_wide_random_state_alone() -> None:
    """The reconnect backoff's jitter has a generator of its own. Drawing from the module-level
    one in the background changed its state under whoever relies on it (Hypothesis checks that
    nothing moves it while a strategy draws: the schemathesis run failed on it)."""
    import random

    from msev15.agent.mcp_client import McpConnection

    accepted = 0

    async def refuse(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        writer.close()

    server = await asyncio.start_server(refuse, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    before = random.getstate()
    connection = McpConnection("gone", f"http://127.0.0.1:{port}/mcp", backoff_initial=0.001, backoff_max=0.005)
    try:
        connection.start()
        deadline = asyncio.get_running_loop().time() + 10
        while accepted < 3 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        assert accepted >= 3  # it failed, backed off and tried again, more than once
        assert random.getstate() == before
    finally:
        await connection.close()
        server.close()
        await server.wait_closed()
