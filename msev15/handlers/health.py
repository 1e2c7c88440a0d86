"""Health, liveness and readiness.

Readiness checks are real but never block a probe: MCP status comes from the connection owner
(which already knows), SMTP from the mailer's configuration, and the model endpoint from a
TCP probe that runs in one background task at a time; its result is cached for a few seconds
and a probe waits for a fresh one only briefly.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web

from msev15 import keys
from msev15.agent.providers.base import Provider
from msev15.handlers.errors import utc_now_iso

CACHE_SECONDS = 5.0
PROBE_WAIT_SECONDS = 0.05


class HealthMonitor:
    def __init__(self, provider: Provider, model_configured: bool) -> None:
        self._provider = provider
        self._configured = model_configured
        self._model_status = "checking"
        self._checked_at = -CACHE_SECONDS
        self._task: asyncio.Task[None] | None = None

    async def _probe(self) -> None:
        status = await self._provider.probe()
        if status == "offline" and not self._configured:
            status = "not_configured"
        self._model_status = status
        self._checked_at = time.monotonic()

    async def model_status(self) -> str:
        if time.monotonic() - self._checked_at >= CACHE_SECONDS and (self._task is None or self._task.done()):
            self._task = asyncio.create_task(self._probe(), name="health:model-probe")
        if self._task is not None and not self._task.done():
            await asyncio.wait([self._task], timeout=PROBE_WAIT_SECONDS)
        return self._model_status

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


def _mcp_status(connection: Any | None) -> str:
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
    return web.json_response({"status": "alive", "uptime_seconds": int(request.app[keys.STATE].uptime)})


async def readiness(request: web.Request) -> web.Response:
    """Readiness probe.
    ---
    summary: Readiness probe (checks dependencies)
    description: >
      `ready` (200) unless the service is shutting down or a required dependency
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
              checks: {api: healthy, mcp_server: unavailable, azure_openai: healthy, smtp: configured}
              warnings: ["MCP server not reachable at http://localhost:8000/mcp"]
      "503":
        description: Not ready.
        content:
          application/json:
            schema: {$ref: "#/components/schemas/Readiness"}
    """
    app = request.app
    settings = app[keys.SETTINGS]
    state = app[keys.STATE]
    connections = app[keys.MCP]
    complaints = connections.get("complaints")
    checks = {
        "api": "shutting_down" if state.shutting_down else "healthy",
        "mcp_server": _mcp_status(complaints),
        "azure_openai": await app[keys.HEALTH].model_status(),
        "smtp": app[keys.MAILER].status,
    }
    if "escalation" in connections:
        checks["escalation_mcp"] = _mcp_status(connections["escalation"])
    warnings = []
    for name, connection in connections.items():
        if connection.status != "connected":
            label = "MCP server" if name == "complaints" else f"{name.capitalize()} MCP server"
            warnings.append(f"{label} not reachable at {connection.url}")
    if checks["azure_openai"] == "not_configured":
        warnings.append("No language model configured: using the built-in offline assistant")
    elif checks["azure_openai"] == "unreachable":
        warnings.append(f"Language model endpoint ({settings.provider}) is not reachable")
    mailer = app[keys.MAILER]
    if mailer.status == "invalid" and mailer.problem:
        warnings.append(f"Email tools disabled: {mailer.problem}")
    ready = not state.shutting_down and not (settings.mcp_server_required and checks["mcp_server"] != "healthy")
    body = {"status": "ready" if ready else "not_ready", "checks": checks, "warnings": warnings}
    return web.json_response(body, status=200 if ready else 503)
