"""The application factory. Every resource is owned by a cleanup context; none lives at import.

Start order (teardown runs in reverse):
  1. events  — the bus and the logging subscriber (last to stop, so every line is written)
  2. store   — sessions (with their expiry sweeper) and the orders database
  3. agent   — tools (orders, email, MCP connections), the LLM provider and the turn runner
  4. health  — the readiness monitor

Shutdown (``on_shutdown``) only signals: the bus refuses new turns and the runner's deadline is
armed. Handlers finish by themselves as their turns end; the agent context then drains what is
still running (turns whose clients left) until the deadline before closing anything.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from msev15 import keys
from msev15.agent.mcp_client import McpConnection
from msev15.agent.prompt import load_system_prompt
from msev15.agent.providers import make_provider
from msev15.agent.runner import AgentRunner
from msev15.agent.tools.email import Mailer, email_tools
from msev15.agent.tools.orders import order_tools
from msev15.agent.tools.registry import ToolRegistry
from msev15.config import Settings
from msev15.events.bus import EventBus
from msev15.events.logsub import LoggingSubscriber
from msev15.handlers import setup_cors, setup_routes
from msev15.handlers.errors import (
    add_extra_headers,
    error_middleware,
    request_id_middleware,
)
from msev15.handlers.ratelimit import RateLimiter, rate_limit_middleware
from msev15.health import HealthMonitor, model_configured
from msev15.store.orders import OrderRepository
from msev15.store.sessions import SessionStore

log = logging.getLogger("app")

SWEEP_SECONDS = 60.0
GC_YOUNG_THRESHOLD = 20_000  # CPython's default is 700


async def events_ctx(app: web.Application) -> AsyncIterator[None]:
    bus = app[keys.BUS] = EventBus()
    subscriber = LoggingSubscriber(bus)
    subscriber.start()
    yield
    await subscriber.close()


async def _sweep_sessions(store: SessionStore) -> None:
    while True:
        await asyncio.sleep(min(SWEEP_SECONDS, store.ttl))
        dropped = store.expire()
        if dropped:
            log.info("Expired %d idle sessions", dropped)


async def store_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    store = app[keys.SESSIONS] = SessionStore(settings.session_ttl_seconds,
                                              max_messages=settings.session_max_messages,
                                              max_sessions=settings.session_max_sessions)
    sweeper = asyncio.create_task(_sweep_sessions(store), name="store:session-sweeper")
    try:
        app[keys.ORDERS] = await OrderRepository.open(settings.order_db_path, seed=settings.order_db_seed)
    except BaseException:
        sweeper.cancel()
        await asyncio.gather(sweeper, return_exceptions=True)
        raise
    yield
    sweeper.cancel()
    await asyncio.gather(sweeper, return_exceptions=True)
    await app[keys.ORDERS].close()


def _mcp_connections(settings: Settings, registry: ToolRegistry) -> dict[str, McpConnection]:
    servers = {"complaints": settings.mcp_server_url, "escalation": settings.escalation_mcp_url}
    connections = {}
    for name, url in servers.items():
        if url:
            connections[name] = McpConnection(name, url, reserved_names=registry.local_names,
                                              call_timeout=settings.tool_timeout_seconds)
    return connections


async def agent_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    state = app[keys.STATE]
    # Everything that can fail comes before anything that has to be stopped.
    system_prompt = load_system_prompt(settings.system_prompt_file)
    registry = app[keys.REGISTRY] = ToolRegistry(timeout=settings.tool_timeout_seconds)
    registry.add_many(order_tools(app[keys.ORDERS]))
    mailer = app[keys.MAILER] = app.get(keys.MAILER) or Mailer.from_settings(settings)
    if mailer.status == "invalid":
        log.error("Email tools disabled: %s", mailer.problem)
    registry.add_many(email_tools(mailer))
    provider = app[keys.PROVIDER] = app.get(keys.PROVIDER) or make_provider(settings)
    connections = app[keys.MCP] = _mcp_connections(settings, registry)
    for connection in connections.values():
        registry.add_source(connection.tools)
        connection.start()
    runner = app[keys.RUNNER] = AgentRunner(
        app[keys.BUS], app[keys.SESSIONS], provider, registry,
        system_prompt=system_prompt,
        max_concurrent=settings.agent_max_concurrent_turns,
        max_rounds=settings.agent_max_tool_rounds,
        context_messages=settings.session_max_context_messages,
    )
    runner.start()
    try:
        yield
    finally:
        # Turns whose clients left are still running: let them finish until the deadline.
        loop = asyncio.get_running_loop()
        remaining = state.shutdown_deadline - loop.time() if state.shutdown_deadline else 0.0
        await app[keys.BUS].drain(max(0.0, remaining))
        await runner.close()
        await asyncio.gather(*(c.close() for c in connections.values()), return_exceptions=True)
        await provider.close()


async def health_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    monitor = app[keys.HEALTH] = HealthMonitor(app[keys.PROVIDER], model_configured=model_configured(settings))
    yield
    await monitor.close()


async def _tune_gc(app: web.Application) -> None:
    """Objects made at start-up live as long as the process: move them out of the collector's
    reach, so full collections (and the latency spikes they cause) stay short. A request makes
    a few hundred short-lived objects; a larger young generation collects them far less often."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, gen1, gen2)


def begin_shutdown(app: web.Application) -> None:
    """Signal only: refuse new turns and arm the deadline for the ones in flight. Idempotent:
    ``msev15 serve`` calls it on the signal (while still listening), aiohttp's shutdown again."""
    state = app[keys.STATE]
    if state.shutting_down:
        return
    state.shutting_down = True
    state.sessions_at_shutdown = len(app[keys.SESSIONS])
    timeout = app[keys.SETTINGS].shutdown_timeout_seconds
    state.shutdown_deadline = asyncio.get_running_loop().time() + timeout
    app[keys.BUS].close()
    app[keys.RUNNER].cut_after(timeout)


async def _on_shutdown(app: web.Application) -> None:
    begin_shutdown(app)


async def create_app(settings: Settings, **overrides: Any) -> web.Application:
    """Build the service. ``overrides`` may inject a ``provider`` or a ``mailer`` (tests, benchmarks)."""
    middlewares: list[Any] = [request_id_middleware, error_middleware]
    if settings.enable_rate_limiting:
        limiter = RateLimiter(settings.rate_limit_per_minute, settings.trusted_proxies)
        middlewares.append(rate_limit_middleware(limiter))
    app = web.Application(middlewares=middlewares, client_max_size=settings.max_body_bytes)
    app[keys.SETTINGS] = settings
    app[keys.STATE] = keys.ServiceState()
    if "provider" in overrides:
        app[keys.PROVIDER] = overrides.pop("provider")
    if "mailer" in overrides:
        app[keys.MAILER] = overrides.pop("mailer")
    if overrides:
        raise TypeError(f"unknown overrides: {', '.join(overrides)}")
    app.cleanup_ctx.extend([events_ctx, store_ctx, agent_ctx, health_ctx])
    app.on_shutdown.append(_on_shutdown)
    app.on_response_prepare.append(add_extra_headers)
    setup_routes(app)
    setup_cors(app, settings)
    app.on_startup.append(_tune_gc)  # last: after every other start-up step
    return app
