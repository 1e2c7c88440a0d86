"""The application factory. Every resource is owned by a cleanup context in the package that owns
it; none lives at import.

Start order (teardown runs in reverse):
  0. auth      — the authenticator of AUTH_MODE (API key store or JWT verifier), if any
  1. events    — the bus with its logging subscriber (last to stop, so every line is written),
                 and the turn log
  2. store     — sessions (with their expiry sweeper), then the orders database
  3. agent     — tools, the LLM provider, the MCP connections, then the turn runner
  4. health    — the readiness monitor

Shutdown has one owner and one deadline: ``begin_shutdown`` tells the runner to refuse new turns
and to cut, at SHUTDOWN_TIMEOUT_SECONDS, whatever is still running. Handlers finish by themselves
as their turns end; the runner's cleanup context cuts anything left before the rest closes.
"""

from __future__ import annotations

import gc
from typing import Any

from aiohttp import web

from msev15 import keys
from msev15.agent.context import mcp_ctx, provider_ctx, runner_ctx, tools_ctx
from msev15.config import Settings
from msev15.connections import ConnectionStats
from msev15.events.context import events_ctx
from msev15.events.metrics import ServiceMetrics
from msev15.handlers import setup_cors, setup_routes
from msev15.handlers.auth import auth_ctx, auth_middleware
from msev15.handlers.auth_limits import FailureLimit, RedisFailureLimit
from msev15.handlers.errors import add_extra_headers
from msev15.handlers.front import front_middleware
from msev15.handlers.metrics import app_gauges
from msev15.handlers.ratelimit import RateLimiter, rate_limit_middleware
from msev15.handlers.tenancy import tenant_rate_middleware
from msev15.health import health_ctx
from msev15.store.context import orders_ctx, sessions_ctx

GC_YOUNG_THRESHOLD = 20_000  # CPython's default is 700


async def _tune_gc(app: web.Application) -> None:
    """Objects made at start-up live as long as the process: move them out of the collector's
    reach, so full collections (and the latency spikes they cause) stay short. A request makes
    a few hundred short-lived objects; a larger young generation collects them far less often."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, gen1, gen2)


def begin_shutdown(app: web.Application) -> None:
    """Signal only: the runner refuses new turns and arms the one deadline for the rest.
    Idempotent: ``msev15 serve`` calls it on the signal (while still listening), aiohttp's
    shutdown again."""
    app[keys.RUNNER].begin_shutdown(app[keys.SETTINGS].shutdown_timeout_seconds)


async def _on_shutdown(app: web.Application) -> None:
    begin_shutdown(app)


async def create_app(settings: Settings, **overrides: Any) -> web.Application:
    """Build the service. ``overrides`` may inject a ``provider`` or a ``mailer`` (tests, benchmarks)."""
    metrics = ServiceMetrics(tenant_labels=settings.metrics_tenant_labels, max_tenants=settings.metrics_max_tenants)
    middlewares: list[Any] = [front_middleware(metrics)]  # request id, envelope, metrics
    limiter: RateLimiter | None = None
    if settings.enable_rate_limiting:
        if settings.session_store == "redis":  # one window per client IP across every instance
            from msev15.handlers.ratelimit_redis import RedisRateLimiter

            limiter = RedisRateLimiter(settings.redis_url, settings.rate_limit_per_minute, settings.trusted_proxies)
        else:
            limiter = RateLimiter(settings.rate_limit_per_minute, settings.trusted_proxies)
        middlewares.append(rate_limit_middleware(limiter, metrics))
    failures: FailureLimit | None = None
    if settings.auth_mode != "none":
        if settings.session_store == "redis":  # one failure window per address across every instance
            failures = RedisFailureLimit(settings.redis_url, settings.auth_max_failures_per_minute,
                                         settings.trusted_proxies)
        middlewares.append(auth_middleware(settings, failures))  # every /api/ route, present and future
    if settings.rate_limit_per_tenant_per_minute:  # after auth: a tenant is counted once it is believed
        middlewares.append(tenant_rate_middleware)
    app = web.Application(middlewares=middlewares, client_max_size=settings.max_body_bytes)
    if limiter is not None:
        app.on_cleanup.append(lambda _app: limiter.close())
    if failures is not None:
        app.on_cleanup.append(lambda _app: failures.close())
    app[keys.SETTINGS] = settings
    app[keys.METRICS] = metrics
    metrics.gauges(app_gauges(app))
    if settings.rate_limit_per_tenant_per_minute:
        tenant_limiter: RateLimiter
        if settings.session_store == "redis":  # one window per tenant across every instance
            from msev15.handlers.ratelimit_redis import RedisRateLimiter

            tenant_limiter = RedisRateLimiter(settings.redis_url, settings.rate_limit_per_tenant_per_minute,
                                              scope="tenant")
        else:
            tenant_limiter = RateLimiter(settings.rate_limit_per_tenant_per_minute)
        app[keys.TENANT_LIMITER] = tenant_limiter
        app.on_cleanup.append(lambda _app: tenant_limiter.close())
    app[keys.STATE] = keys.ServiceState()
    app[keys.CONNECTIONS] = ConnectionStats()  # filled by msev15 serve's GuardedRunner
    if "provider" in overrides:
        app[keys.PROVIDER] = overrides.pop("provider")
    if "mailer" in overrides:
        app[keys.MAILER] = overrides.pop("mailer")
    if overrides:
        raise TypeError(f"unknown overrides: {', '.join(overrides)}")
    app.cleanup_ctx.extend([auth_ctx, events_ctx, sessions_ctx, orders_ctx, tools_ctx, provider_ctx, mcp_ctx,
                            runner_ctx, health_ctx])
    app.on_shutdown.append(_on_shutdown)
    app.on_response_prepare.append(add_extra_headers)
    setup_routes(app)
    setup_cors(app, settings)
    app.on_startup.append(_tune_gc)  # last: after every other start-up step
    return app
