"""The application factory. Every resource is owned by a cleanup context in the package that owns
it; none lives at import.

The backends are the topology's (msev15.topology), made here once from the settings.

Start order (teardown runs in reverse):
  0. tracing   — only with an OTLP endpoint: the tracer provider (first up, last down, so the spans
                 of a turn cut at shutdown still go out); its agent spans are put on the runner
                 after step 6
  1. events    — the bus with its logging subscriber (last to stop, so every line is written)
  2. topology  — session store, turn log, coordination, limiters, feedback (closed after the runner),
                 then the index of completed turns that feedback is checked against
  3. auth      — the authenticator of AUTH_MODE (API key store or JWT verifier), if any
  4. store     — the session expiry sweeper, then the orders database
  5. agent     — tools, the LLM provider, the MCP connections, the handoff timeouts, then the turn runner
  6. mcp       — the MCP endpoint's session manager (/mcp), in its owner task
  7. health    — the readiness monitor

Shutdown has one owner and one deadline: ``begin_shutdown`` tells the runner to refuse new turns
and to cut, at SHUTDOWN_TIMEOUT_SECONDS, whatever is still running. Handlers finish by themselves
as their turns end; the runner's cleanup context cuts anything left before the rest closes.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any

from aiohttp import web

from msev15.agent.context import (
    MAILER,
    PROVIDER,
    begin_shutdown,
    mcp_ctx,
    mcp_pool_ctx,
    provider_ctx,
    runner_ctx,
    tools_ctx,
    turn_profiles_ctx,
)
from msev15.agent.handoff_timeout import handoff_timeout_ctx
from msev15.common.telemetry import TelemetryConfig
from msev15.config import SETTINGS, Settings
from msev15.events.completed_turns import completed_turns_ctx
from msev15.events.context import events_ctx
from msev15.events.metrics import METRICS, ServiceMetrics
from msev15.handlers import expect, setup_cors, setup_routes
from msev15.handlers.auth import auth_ctx, auth_middleware
from msev15.handlers.errors import add_extra_headers
from msev15.handlers.front import front_middleware
from msev15.handlers.health_monitor import STATE, ServiceState, health_ctx
from msev15.handlers.mcp_endpoint import mcp_endpoint_ctx
from msev15.handlers.metrics import app_gauges
from msev15.handlers.ratelimit import rate_limit_middleware
from msev15.handlers.tenancy import tenant_rate_middleware
from msev15.server.connections import CONNECTIONS, ConnectionStats
from msev15.store.context import sweeper_ctx
from msev15.topology import TOPOLOGY, Topology, topology_ctx

GC_YOUNG_THRESHOLD = 20_000  # CPython's default is 700


async def _tune_gc(app: web.Application) -> None:
    """Objects made at start-up live as long as the process: move them out of the collector's
    reach, so full collections (and the latency spikes they cause) stay short. A request makes
    a few hundred short-lived objects; a larger young generation collects them far less often."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, gen1, gen2)


async def _on_shutdown(app: web.Application) -> None:
    begin_shutdown(app)


def _traced(middlewares: list[Any], telemetry: TelemetryConfig) -> Callable[[web.Application], None]:
    """Tracing on: the HTTP server span outermost; then (the returned step, once the app exists)
    the provider first to start and last to stop, the agent's spans once the runner exists.
    Off, none of this is imported."""
    from msev15.agent.tracing import agent_tracing_ctx
    from msev15.events.tracing import TRACING, Tracing, tracing_ctx
    from msev15.handlers.tracing import tracing_middleware

    tracing = Tracing(telemetry)
    middlewares.insert(0, tracing_middleware(tracing))

    def install(app: web.Application) -> None:
        app[TRACING] = tracing
        app.cleanup_ctx.insert(0, tracing_ctx)
        app.cleanup_ctx.append(agent_tracing_ctx)

    return install


async def create_app(settings: Settings, **overrides: Any) -> web.Application:
    """Build the service. ``overrides`` may inject a ``provider`` or a ``mailer`` (tests, benchmarks),
    and ``telemetry`` (the OTEL_* configuration; None or absent: tracing off)."""
    metrics = ServiceMetrics(tenant_labels=settings.metrics_tenant_labels, max_tenants=settings.metrics_max_tenants)
    topology = Topology(settings)
    middlewares: list[Any] = [front_middleware(metrics)]  # request id, envelope, metrics
    if topology.ip_limiter is not None:
        middlewares.append(rate_limit_middleware(topology.ip_limiter, metrics))
    if settings.auth_mode != "none":
        middlewares.append(auth_middleware(settings, topology.failure_limit))  # every /api/ route, present and future
    if topology.tenant_limiter is not None:  # after auth: a tenant is counted once it is believed
        middlewares.append(tenant_rate_middleware)
    telemetry: TelemetryConfig | None = overrides.pop("telemetry", None)
    install_tracing = _traced(middlewares, telemetry) if telemetry is not None else None
    app = web.Application(middlewares=middlewares, client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[METRICS] = metrics
    app[TOPOLOGY] = topology
    connections = app[CONNECTIONS] = ConnectionStats()  # filled by msev15 serve's GuardedRunner
    metrics.gauges(app_gauges(app, connections, store_label=topology.kind))
    app[STATE] = ServiceState()
    if "provider" in overrides:
        app[PROVIDER] = overrides.pop("provider")
    if "mailer" in overrides:
        app[MAILER] = overrides.pop("mailer")
    if overrides:
        raise TypeError(f"unknown overrides: {', '.join(overrides)}")
    app.cleanup_ctx.extend([events_ctx, topology_ctx, completed_turns_ctx, auth_ctx, sweeper_ctx,
                            tools_ctx, provider_ctx, mcp_ctx, mcp_pool_ctx, turn_profiles_ctx,
                            handoff_timeout_ctx, runner_ctx, mcp_endpoint_ctx, health_ctx])
    if install_tracing is not None:
        install_tracing(app)
    app.on_shutdown.append(_on_shutdown)
    app.on_response_prepare.append(add_extra_headers)
    setup_routes(app)
    setup_cors(app, settings)
    expect.install(app)  # after the last route: CORS adds preflight routes
    app.on_startup.append(_tune_gc)  # last: after every other start-up step
    return app
