"""Health, liveness and readiness: the HTTP handlers.

Readiness never blocks on a probe: MCP status comes from the connection owner (which already
knows), SMTP from the mailer's configuration, and the model endpoint from the service's
:class:`~msev15.handlers.health_monitor.HealthMonitor`;
:func:`~msev15.handlers.health_monitor.readiness_warnings` words the warnings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, NotRequired, TypedDict

from aiohttp import web

from msev15.agent.context import MAILER, MCP, RUNNER
from msev15.config import SETTINGS
from msev15.handlers.errors import utc_now_iso
from msev15.handlers.health_monitor import HEALTH, STATE, ModelStatus, readiness_warnings
from msev15.store.base import SESSIONS
from msev15.store.context import ORDERS
from msev15.topology import TOPOLOGY

if TYPE_CHECKING:
    from msev15.agent.mcp_client import McpConnection
    from msev15.agent.tools.mailer import MailerStatus
    from msev15.store.base import StoreStatus

McpCheck = Literal["healthy", "unavailable", "not_configured"]


class ModelCheck(TypedDict):
    """The model endpoint, named after what it is: the status, the provider and where it is."""

    status: ModelStatus
    provider: str
    endpoint: str


class ReadinessChecks(TypedDict):
    """The readiness body's ``checks``: the values the Readiness schema of the API documents."""

    api: Literal["healthy", "shutting_down"]
    mcp_server: McpCheck
    azure_openai: ModelStatus  # the spec's name, for any provider; ``model`` says which
    model: ModelCheck
    smtp: MailerStatus
    session_store: StoreStatus
    escalation_mcp: NotRequired[McpCheck]
    azure_openai_auth: NotRequired[str]
    orders_store: NotRequired[Literal["unavailable"]]
    database: NotRequired[StoreStatus]  # PostgreSQL, when DATABASE_URL is set


def _mcp_status(connection: McpConnection | None) -> McpCheck:
    if connection is None:
        return "not_configured"
    return "healthy" if connection.status == "connected" else "unavailable"


async def health(request: web.Request) -> web.Response:
    """Basic health.
    ---
    summary: Basic health check
    tags: [health]
    responses:
      "200":
        description: The process is serving requests.
        content:
          application/json:
            schema: {$ref: "#/components/schemas/Health"}
            example: {status: healthy, timestamp: "2026-02-19T10:30:00Z"}
    """
    return web.json_response({"status": "healthy", "timestamp": utc_now_iso()})


async def liveness(request: web.Request) -> web.Response:
    """Liveness probe.
    ---
    summary: Liveness probe
    tags: [health]
    responses:
      "200":
        description: The process is alive.
        content:
          application/json:
            schema: {$ref: "#/components/schemas/Liveness"}
            example: {status: alive, uptime_seconds: 3600}
    """
    return web.json_response({"status": "alive", "uptime_seconds": int(request.app[STATE].uptime)})


async def readiness(request: web.Request) -> web.Response:
    """Readiness probe.
    ---
    summary: Readiness probe (checks dependencies)
    description: >
      `ready` (200) unless the service is shutting down, the session store cannot be
      written (`session_store: unavailable`) or a required dependency
      (MCP_SERVER_REQUIRED=true) is down, then `not_ready` (503).
    tags: [health]
    responses:
      "200":
        description: Ready to take traffic.
        content:
          application/json:
            schema: {$ref: "#/components/schemas/Readiness"}
            example:
              status: ready
              checks: {api: healthy, mcp_server: unavailable, azure_openai: healthy, smtp: configured,
                       session_store: healthy}
              warnings: ["MCP server not reachable at http://localhost:8000/mcp"]
      "503":
        description: Not ready.
        content:
          application/json:
            schema: {$ref: "#/components/schemas/Readiness"}
    """
    app = request.app
    settings = app[SETTINGS]
    connections = app[MCP]
    complaints = connections.get("complaints")
    monitor = app[HEALTH]
    model_status = await monitor.model_status()
    checks: ReadinessChecks = {
        "api": "healthy" if app[RUNNER].accepting else "shutting_down",
        "mcp_server": _mcp_status(complaints),
        "azure_openai": model_status,
        "model": {"status": model_status, "provider": settings.provider, "endpoint": monitor.endpoint},
        "smtp": app[MAILER].status,
        "session_store": await app[SESSIONS].status(),
    }
    if "escalation" in connections:
        checks["escalation_mcp"] = _mcp_status(connections["escalation"])
    if settings.provider == "azure":  # which sign-in the model calls use: "api_key" or "entra_id"
        checks["azure_openai_auth"] = settings.azure_auth.replace("-", "_")
    database = app[TOPOLOGY].database
    database_ok = True
    if database is not None:
        checks["database"] = await database.status()
        database_ok = checks["database"] == "healthy"
    orders = app[ORDERS]
    # After a refused write, not ready until a write succeeds (a client's, or this probe's).
    store_ok = orders.write_failure is None or await orders.probe_write()
    if not store_ok:  # listed only when failing: the spec's set of checks stays as it is otherwise
        checks["orders_store"] = "unavailable"
    warnings = readiness_warnings(settings, model_status=model_status, mailer=app[MAILER],
                                  mcp=connections, session_store=checks["session_store"],
                                  model_endpoint=monitor.endpoint)
    if not store_ok:
        warnings.append("The order database refuses writes (disk full or read-only?); orders cannot be saved.")
    if not database_ok:
        warnings.append("PostgreSQL (DATABASE_URL) cannot be reached; requests that need it answer 503.")
    ready = (app[RUNNER].accepting and store_ok and database_ok and checks["session_store"] == "healthy"
             and not (settings.mcp_server_required and checks["mcp_server"] != "healthy"))
    body = {"status": "ready" if ready else "not_ready", "checks": checks, "warnings": warnings}
    return web.json_response(body, status=200 if ready else 503)
