"""The agent package's resources, each with its own cleanup context, in start order: the tools
(orders and email), the LLM provider, the MCP connections (whose tools join the registry) and
the turn runner, which stops first and cuts what is still running before the rest close."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from aiohttp import web

from msev15.agent.coordination import COORDINATION
from msev15.agent.mcp_pool import McpPool
from msev15.agent.profile_turn import TurnProfiles
from msev15.agent.prompt import load_system_prompt
from msev15.agent.providers import make_provider
from msev15.agent.providers.base import Provider
from msev15.agent.runner import AgentRunner
from msev15.agent.tools.email import email_tools
from msev15.agent.tools.handoff import handoff_tools
from msev15.agent.tools.mailer import Mailer
from msev15.agent.tools.orders import order_tools
from msev15.agent.tools.registry import ToolRegistry
from msev15.agent.tools.send_limits import SEND_LIMITER
from msev15.config import SETTINGS
from msev15.events.context import BUS
from msev15.events.turnlog import TURNS
from msev15.store.base import SESSIONS
from msev15.store.context import ORDERS
from msev15.store.handoffs import HANDOFFS
from msev15.store.pending import PENDING
from msev15.store.profiles import PROFILES
from msev15.store.session_events import SESSION_EVENTS

if TYPE_CHECKING:
    from msev15.agent.mcp_client import McpConnection  # the mcp package: imported only when a server is set

log = logging.getLogger("app")

REGISTRY: web.AppKey[ToolRegistry] = web.AppKey("msev15.registry")
PROVIDER: web.AppKey[Provider] = web.AppKey("msev15.provider")
RUNNER: web.AppKey[AgentRunner] = web.AppKey("msev15.runner")
MAILER: web.AppKey[Mailer] = web.AppKey("msev15.mailer")
MCP: web.AppKey[dict[str, McpConnection]] = web.AppKey("msev15.mcp")  # by server label
MCP_POOL: web.AppKey[McpPool] = web.AppKey("msev15.mcp_pool")  # the tenants' own servers (profiles)
TURN_PROFILES: web.AppKey[TurnProfiles] = web.AppKey("msev15.turn_profiles")


async def tools_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    registry = app[REGISTRY] = ToolRegistry(timeout=settings.tool_timeout_seconds)
    registry.add_many(order_tools(app[ORDERS]))
    mailer = app[MAILER] = app.get(MAILER) or Mailer.from_settings(settings, limiter=app.get(SEND_LIMITER))
    if mailer.status == "invalid":
        log.error("Email tools disabled: %s", mailer.problem)
    registry.add_many(email_tools(mailer))
    if settings.handoff_enabled:
        registry.add_many(handoff_tools())
    yield


async def provider_ctx(app: web.Application) -> AsyncIterator[None]:
    # The offline assistant reads the registry's capability tags to find its tools.
    capabilities = app[REGISTRY].capabilities
    provider = app[PROVIDER] = app.get(PROVIDER) or make_provider(app[SETTINGS], capabilities)
    yield
    await provider.close()


async def mcp_ctx(app: web.Application) -> AsyncIterator[None]:
    """Connect in the background: start-up never waits for an MCP server unless it is required."""
    settings, registry = app[SETTINGS], app[REGISTRY]
    servers = {"complaints": (settings.mcp_server_url, settings.mcp_auth_token),
               "escalation": (settings.escalation_mcp_url,
                              settings.escalation_mcp_auth_token or settings.mcp_auth_token)}
    connections = app[MCP] = {}
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


async def mcp_pool_ctx(app: web.Application) -> AsyncIterator[None]:
    """The pool of the tenants' MCP servers: nothing opens until a profile names one."""
    settings = app[SETTINGS]
    pool = app[MCP_POOL] = McpPool(max_connections=settings.mcp_max_connections,
                                   idle_seconds=settings.mcp_idle_seconds,
                                   call_timeout=settings.tool_timeout_seconds,
                                   connect_timeout=settings.mcp_connect_timeout_seconds)
    pool.start()
    yield
    await pool.close()


async def turn_profiles_ctx(app: web.Application) -> AsyncIterator[None]:
    """Each tenant's profile applied to its turns (read by the runner and the handoff timeouts)."""
    system_prompt = load_system_prompt(app[SETTINGS].system_prompt_file)
    app[TURN_PROFILES] = TurnProfiles(app.get(PROFILES), app[REGISTRY], system_prompt, pool=app[MCP_POOL])
    yield


async def runner_ctx(app: web.Application) -> AsyncIterator[None]:
    """Last to start, first to stop: cuts what is still running before the rest closes. Built with
    the topology's coordination, which it binds to itself on start."""
    settings = app[SETTINGS]
    profiles = app[TURN_PROFILES]
    system_prompt = profiles.default.system_prompt
    runner = app[RUNNER] = AgentRunner(
        app[BUS], app[TURNS], app[SESSIONS], app[PROVIDER], app[REGISTRY], app[COORDINATION],
        system_prompt=system_prompt,
        max_concurrent=settings.agent_max_concurrent_turns,
        max_concurrent_per_tenant=settings.agent_max_concurrent_turns_per_tenant or None,
        max_queued_per_tenant=settings.agent_max_queued_turns_per_tenant,
        max_rounds=settings.agent_max_tool_rounds,
        context_messages=settings.session_max_context_messages,
        context_max_chars=settings.llm_context_max_chars,
        max_output_chars=settings.llm_max_output_chars,
        pending=app[PENDING],
        tool_approval=settings.tool_approval,
        pending_timeout_seconds=settings.pending_timeout_seconds,
        handoffs=app[HANDOFFS],
        session_events=app[SESSION_EVENTS],
        profiles=profiles,
    )
    runner.start()
    yield
    await runner.close()


def begin_shutdown(app: web.Application) -> None:
    """Signal only: the runner refuses new turns and arms the one deadline for the rest.
    Idempotent: ``msev15 serve`` calls it on the signal (while still listening), aiohttp's
    shutdown again."""
    app[RUNNER].begin_shutdown(app[SETTINGS].shutdown_timeout_seconds)
