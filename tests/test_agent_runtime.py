"""The tool registry and the runner under load: timeouts, crashes, limits, ordering, logs."""

from __future__ import annotations

import asyncio
import io
import json
import re

from msev15.agent.context import RUNNER
from msev15.agent.tools.registry import Tool, ToolContext, ToolError, ToolRegistry
from msev15.app import create_app
from msev15.logs.service import setup_logging
from msev15.logs.writer import close_logging
from msev15.store.context import ORDERS
from tests.conftest import make_settings, matched, sse_events
from tests.llm_server import Reply, ScriptedLLM

CTX = ToolContext("tenant", "session", "req")
SCHEMA = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0}}, "required": ["n"],
          "additionalProperties": False}


def _tool(name: str, func) -> Tool:
    return Tool(name, f"test tool {name}", SCHEMA, func)


async def test_registry_turns_every_failure_into_a_result() -> None:
    release = asyncio.Event()

    async def slow(ctx: ToolContext, args: dict) -> dict:
        await release.wait()
        return {}

    async def crash(ctx: ToolContext, args: dict) -> dict:
        raise RuntimeError("internal secret")

    async def refuse(ctx: ToolContext, args: dict) -> dict:
        raise ToolError("n is too big for this shop")

    async def echo(ctx: ToolContext, args: dict) -> dict:
        return {"n": args["n"], "tenant": ctx.tenant_id}

    registry = ToolRegistry(timeout=0.05)
    registry.add_many([_tool("slow", slow), _tool("crash", crash), _tool("refuse", refuse), _tool("echo", echo)])
    timed_out = await registry.call("slow", {"n": 1}, CTX)
    assert not timed_out.ok and "timed out after 0.05s" in timed_out.content
    crashed = await registry.call("crash", {"n": 1}, CTX)
    assert not crashed.ok and "internal error" in crashed.content and "secret" not in crashed.content
    refused = await registry.call("refuse", '{"n": 5}', CTX)
    assert json.loads(refused.content) == {"error": "n is too big for this shop"}
    bad = await registry.call("echo", {"n": -1}, CTX)
    assert not bad.ok and "invalid arguments: n:" in bad.content
    extra = await registry.call("echo", {"n": 1, "tenant_id": "other"}, CTX)
    assert not extra.ok and "Additional properties" in extra.content
    ok = await registry.call("echo", '{"n": 3}', CTX)
    assert ok.ok and json.loads(ok.content) == {"n": 3, "tenant": "tenant"}
    release.set()


async def test_registry_sources_and_schema_cache() -> None:
    async def f(ctx: ToolContext, args: dict) -> int:
        return 1

    local = _tool("get_complaint", f)
    registry = ToolRegistry()
    registry.add(local)
    dynamic: list[Tool] = []
    registry.add_source(lambda: dynamic)
    first = registry.schemas()
    assert registry.schemas() is first  # unchanged set: cached
    dynamic.append(_tool("complaints_get_complaint", f))
    assert [s["function"]["name"] for s in registry.schemas()] == ["get_complaint", "complaints_get_complaint"]
    dynamic.append(_tool("get_complaint", f))  # a source never shadows a local tool
    assert registry.tools()["get_complaint"] is local
    try:
        registry.add(_tool("get_complaint", f))
    except ValueError as exc:
        assert "duplicate" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("duplicate local tool accepted")


async def test_more_turns_than_slots_wait_instead_of_failing(service, llm: ScriptedLLM) -> None:
    llm.default = Reply("slow answer", delay=0.02)
    client = await service(llm_provider="openai", openai_base_url=f"{llm.url}/v1", llm_max_retries=0,
                           agent_max_concurrent_turns=2, agent_max_concurrent_turns_per_tenant=2)
    responses = await asyncio.gather(*(client.post("/api/v1/chat", json={"session_id": f"s{i}", "message": "hi"})
                                       for i in range(8)))
    assert [r.status for r in responses] == [200] * 8
    assert client.app[RUNNER].completed == 8
    assert llm.max_active == 2  # never more than the limit at once, and the limit was used


async def test_fifty_concurrent_turns_create_fifty_orders(service) -> None:
    client = await service()
    text = "create an order for customer CUST-{i}: 1 x SKU ITEM-{i} at 3.50, ship to {i} Main St"
    responses = await asyncio.gather(*(
        client.post("/api/v1/chat", json={"session_id": f"buyer-{i}", "message": text.format(i=i)})
        for i in range(50)))
    bodies = [await r.json() for r in responses]
    assert all(r.status == 200 for r in responses)
    assert all("I've created it" in b["message"] for b in bodies)
    assert len({matched(r"ORD-\w{8}", b["message"])[0] for b in bodies}) == 50
    assert await client.app[ORDERS].count("default") == 50


async def test_turn_logs_carry_session_tenant_and_request(aiohttp_client, tmp_path) -> None:
    settings = make_settings(tmp_path, log_to_file=True, order_db_seed=True)
    setup_logging(settings, stream=io.StringIO())
    try:
        client = await aiohttp_client(await create_app(settings))
        resp = await client.post("/api/v1/chat/stream", headers={"X-Request-ID": "req-42"},
                                 json={"session_id": "abc-123", "tenant_id": "company-A",
                                       "message": "list recent orders"})
        assert sse_events(await resp.text())[-1]["type"] == "done"
    finally:
        close_logging()
    lines = (tmp_path / "logs" / "app.log").read_text().splitlines()
    ours = [line for line in lines if "session=abc-123 | tenant=company-A | req=req-42" in line]
    messages = [line.rsplit(" | ", 1)[1] for line in ours]
    assert "User message received" in messages
    assert any(" | INFO | api.chat | session=abc-123 | tenant=company-A | req=req-42 | User message received"
               in line for line in ours)
    assert "Tool call get_all_orders (call_offline_1)" in messages
    assert "Tool result get_all_orders ok" in messages
    assert any(m.startswith("Turn completed") for m in messages)
    assert all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \| (INFO|WARNING) \| ", line) for line in ours)


async def test_validator_cache_stays_bounded_across_tool_refreshes() -> None:
    async def f(ctx: ToolContext, args: dict) -> int:
        return args["n"]

    current: list[Tool] = []
    registry = ToolRegistry()
    registry.add_source(lambda: current)
    for version in range(200):  # an MCP server changing its schema again and again
        schema = {**SCHEMA, "description": f"v{version}"}
        current[:] = [Tool("remote_tool", "remote", schema, f, source="mcp")]
        assert (await registry.call("remote_tool", {"n": version}, CTX)).ok
    assert len(registry._validators) == 1
