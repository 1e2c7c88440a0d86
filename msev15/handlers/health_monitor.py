"""The service's health, for readiness and the banner: the model probe and the warnings.

Readiness never blocks a probe on the model: :class:`HealthMonitor` probes the endpoint in one
background task at a time, caches the result for a few seconds, and a caller waits for a fresh
one only briefly. :func:`readiness_warnings` is the one place that words what is degraded, for the
readiness body and for the start-up banner alike.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from aiohttp import web

from msev15.agent.context import PROVIDER
from msev15.agent.providers.base import ProbeStatus, Provider
from msev15.config import SETTINGS, Settings

if TYPE_CHECKING:
    from msev15.agent.mcp_client import McpConnection
    from msev15.agent.tools.mailer import Mailer

# The readiness check "model" (and its older name "azure_openai"): a probe's answer, or what
# stands before or instead of one.
ModelStatus = ProbeStatus | Literal["checking", "not_configured"]

CACHE_SECONDS = 5.0
PROBE_WAIT_SECONDS = 0.05

# How a warning names each MCP server of the settings (MCP_SERVER_URL, ESCALATION_MCP_URL).
MCP_LABELS = {"complaints": "MCP server", "escalation": "Escalation MCP server"}


def model_configured(settings: Settings) -> bool:
    """False when no model is configured and the offline assistant stands in for one."""
    return settings.provider != "offline" or settings.llm_provider == "offline"


class HealthMonitor:
    def __init__(self, provider: Provider, model_configured: bool) -> None:
        self._provider = provider
        self._configured = model_configured
        self._model_status: ModelStatus = "checking" if model_configured else "not_configured"
        self._checked_at = -CACHE_SECONDS
        self._task: asyncio.Task[None] | None = None

    async def _probe(self) -> None:
        status: ModelStatus = await self._provider.probe()
        if status == "offline" and not self._configured:
            status = "not_configured"
        self._model_status = status
        self._checked_at = time.monotonic()

    @property
    def last_model_status(self) -> ModelStatus:
        """The latest known status, without probing ("checking" before a configured model's
        first probe ends)."""
        return self._model_status

    @property
    def endpoint(self) -> str:
        """Where the model is called ("" for the offline assistant)."""
        return str(getattr(self._provider, "endpoint", ""))

    async def first_status(self, timeout: float) -> ModelStatus:
        """The first probe's answer, waiting at most ``timeout`` for it (for the banner)."""
        await self.model_status()
        if self._task is not None and not self._task.done():
            await asyncio.wait([self._task], timeout=timeout)
        return self._model_status

    async def model_status(self) -> ModelStatus:
        if time.monotonic() - self._checked_at >= CACHE_SECONDS and (self._task is None or self._task.done()):
            self._task = asyncio.create_task(self._probe(), name="health:model-probe")
        if self._task is not None and not self._task.done():
            await asyncio.wait([self._task], timeout=PROBE_WAIT_SECONDS)
        return self._model_status

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


@dataclass
class ServiceState:
    """What the service knows about itself: uptime, and what shutdown found."""

    started: float = field(default_factory=time.monotonic)
    sessions_at_shutdown: int = 0

    @property
    def uptime(self) -> float:
        return time.monotonic() - self.started


HEALTH: web.AppKey[HealthMonitor] = web.AppKey("msev15.health")
STATE = web.AppKey("msev15.state", ServiceState)


async def health_ctx(app: web.Application) -> AsyncIterator[None]:
    configured = model_configured(app[SETTINGS])
    monitor = app[HEALTH] = HealthMonitor(app[PROVIDER], model_configured=configured)
    yield
    await monitor.close()


def readiness_warnings(settings: Settings, *, model_status: ModelStatus, mailer: Mailer,
                       mcp: Mapping[str, McpConnection], at_start: bool = False,
                       session_store: str = "healthy", model_endpoint: str = "") -> list[str]:
    """One sentence per degraded dependency: the session store, unreachable MCP servers, the
    model, the email tools.

    ``model_status`` is the :class:`HealthMonitor`'s, ``session_store`` the store's ``status()``.
    ``at_start`` words them for the banner, which also says what the service does about an
    unreachable MCP server.
    """
    found = []
    if session_store != "healthy":
        found.append(f"Session store ({settings.session_store}) is unavailable: new answers cannot be saved")
    for name, connection in mcp.items():
        if connection.status != "connected":
            label = MCP_LABELS.get(name, f"{name.capitalize()} MCP server")
            found.append(f"{label} not reachable at {connection.url}"
                         + ("; continuing without its tools and reconnecting in the background" if at_start else ""))
    if model_status == "not_configured":
        found.append("No language model configured: using the built-in offline assistant")
    elif model_status == "unreachable":
        where = f" at {model_endpoint}" if model_endpoint else ""
        found.append(f"Language model endpoint ({settings.provider}){where} is not reachable: check "
                     f"{_endpoint_var(settings)}")
    elif model_status == "rejected":
        found.append(f"Language model endpoint ({settings.provider}) refused the service's credentials "
                     f"(HTTP 401/403): check {_key_var(settings)}")
    elif model_status == "no_credential":
        found.append("No Microsoft Entra ID credential for Azure OpenAI (set AZURE_OPENAI_API_KEY, or sign in: "
                     "managed identity, workload identity, AZURE_CLIENT_* variables or the Azure CLI)")
    if mailer.status == "invalid" and mailer.problem:
        found.append(f"Email tools disabled: {mailer.problem}")
    return found


def _endpoint_var(settings: Settings) -> str:
    if settings.provider != "azure":
        return "OPENAI_BASE_URL"
    return "AZURE_OPENAI_ENDPOINT" if settings.azure_openai_endpoint else "AZURE_AI_PROJECT_ENDPOINT"


def _key_var(settings: Settings) -> str:
    if settings.provider != "azure":
        return "OPENAI_API_KEY"
    if settings.azure_auth == "entra-id":
        return "the Microsoft Entra ID identity's role on the resource, or AZURE_OPENAI_API_KEY"
    return "AZURE_OPENAI_API_KEY"
