"""Every piece of shared application state, under typed AppKeys defined in one place."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import web

from msev15.config import Settings

if TYPE_CHECKING:
    from msev15.agent.coordination import Coordination
    from msev15.agent.mcp_client import McpConnection
    from msev15.agent.providers.base import Provider
    from msev15.agent.runner import AgentRunner
    from msev15.agent.tools.email import Mailer
    from msev15.agent.tools.registry import ToolRegistry
    from msev15.connections import ConnectionStats
    from msev15.events.bus import EventBus
    from msev15.events.metrics import ServiceMetrics
    from msev15.events.turnlog import TurnLog
    from msev15.handlers.auth import Authenticator
    from msev15.handlers.ratelimit import Limiter
    from msev15.health import HealthMonitor
    from msev15.store.base import Sessions
    from msev15.store.orders import OrderRepository


@dataclass
class ServiceState:
    """What the service knows about itself: uptime, and what shutdown found."""

    started: float = field(default_factory=time.monotonic)
    sessions_at_shutdown: int = 0

    @property
    def uptime(self) -> float:
        return time.monotonic() - self.started


SETTINGS = web.AppKey("msev15.settings", Settings)
STATE = web.AppKey("msev15.state", ServiceState)
BUS: web.AppKey[EventBus] = web.AppKey("msev15.bus")
TURNS: web.AppKey[TurnLog] = web.AppKey("msev15.turns")
SESSIONS: web.AppKey[Sessions] = web.AppKey("msev15.sessions")
REGISTRY: web.AppKey[ToolRegistry] = web.AppKey("msev15.registry")
PROVIDER: web.AppKey[Provider] = web.AppKey("msev15.provider")
COORDINATION: web.AppKey[Coordination] = web.AppKey("msev15.coordination")
RUNNER: web.AppKey[AgentRunner] = web.AppKey("msev15.runner")
ORDERS: web.AppKey[OrderRepository] = web.AppKey("msev15.orders")
MAILER: web.AppKey[Mailer] = web.AppKey("msev15.mailer")
MCP: web.AppKey[dict[str, McpConnection]] = web.AppKey("msev15.mcp")
HEALTH: web.AppKey[HealthMonitor] = web.AppKey("msev15.health")
AUTHENTICATOR: web.AppKey[Authenticator] = web.AppKey("msev15.authenticator")
CONNECTIONS: web.AppKey[ConnectionStats] = web.AppKey("msev15.connections")
METRICS: web.AppKey[ServiceMetrics] = web.AppKey("msev15.metrics")
TENANT_LIMITER: web.AppKey[Limiter] = web.AppKey("msev15.tenant_limiter")
