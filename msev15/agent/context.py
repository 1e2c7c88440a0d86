"""The agent package's resources, each with its own cleanup context, in start order: the tools
(orders and email), the LLM provider, the MCP connections (whose tools join the registry) and
the turn runner, which stops first and cuts what is still running before the rest close."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from msev15 import keys
from msev15.agent.coordination import Coordination, LocalCoordination
from msev15.agent.prompt import load_system_prompt
from msev15.agent.providers import make_provider
from msev15.agent.runner import AgentRunner
from msev15.agent.tools.email import Mailer, email_tools
from msev15.agent.tools.orders import order_tools
from msev15.agent.tools.registry import ToolRegistry

log = logging.getLogger("app")


async def tools_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    registry = app[keys.REGISTRY] = ToolRegistry(timeout=settings.tool_timeout_seconds)
    registry.add_many(order_tools(app[keys.ORDERS]))
    mailer = app[keys.MAILER] = app.get(keys.MAILER) or Mailer.from_settings(settings)
    if mailer.status == "invalid":
        log.error("Email tools disabled: %s", mailer.problem)
    registry.add_many(email_tools(mailer))
    yield
    await mailer.limiter.close()


async def provider_ctx(app: web.Application) -> AsyncIterator[None]:
    provider = app[keys.PROVIDER] = app.get(keys.PROVIDER) or make_provider(app[keys.SETTINGS])
    yield
    await provider.close()


async def mcp_ctx(app: web.Application) -> AsyncIterator[None]:
    """Connect in the background: start-up never waits for an MCP server unless it is required."""
    settings, registry = app[keys.SETTINGS], app[keys.REGISTRY]
    servers = {"complaints": (settings.mcp_server_url, settings.mcp_auth_token),
               "escalation": (settings.escalation_mcp_url,
                              settings.escalation_mcp_auth_token or settings.mcp_auth_token)}
    connections = app[keys.MCP] = {}
    if any(url for url, _ in servers.values()):
        from msev15.agent.mcp_client import McpConnection  # the mcp package: only when a server is set

        connections.update({
            name: McpConnection(name, url, reserved_names=registry.local_names,
                                call_timeout=settings.tool_timeout_seconds, auth_token=token)
            for name, (url, token) in servers.items() if url
        })
    for connection in connections.values():
        registry.add_source(connection.tools)
        connection.start()
    yield
    await asyncio.gather(*(c.close() for c in connections.values()), return_exceptions=True)


async def runner_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    system_prompt = load_system_prompt(settings.system_prompt_file)
    runner = app[keys.RUNNER] = AgentRunner(
        app[keys.BUS], app[keys.TURNS], app[keys.SESSIONS], app[keys.PROVIDER], app[keys.REGISTRY],
        system_prompt=system_prompt,
        max_concurrent=settings.agent_max_concurrent_turns,
        max_concurrent_per_tenant=settings.agent_max_concurrent_turns_per_tenant or None,
        max_queued_per_tenant=settings.agent_max_queued_turns_per_tenant,
        max_rounds=settings.agent_max_tool_rounds,
        context_messages=settings.session_max_context_messages,
        context_max_chars=settings.llm_context_max_chars,
        max_output_chars=settings.llm_max_output_chars,
    )
    coordination: Coordination
    if settings.session_store == "redis":
        from msev15.agent.redis_coordination import RedisCoordination
        from msev15.events.redis_turnlog import RedisTurnLog

        turns = app[keys.TURNS]
        assert isinstance(turns, RedisTurnLog)
        coordination = RedisCoordination(settings.redis_url, turns.instance_id, runner, turns,
                                         settings.redis_lease_seconds)
        runner.coordination = coordination
    else:
        coordination = LocalCoordination(runner)
    app[keys.COORDINATION] = coordination
    coordination.start()
    yield
    await runner.close()
    await coordination.close()
