"""A tenant's agent profile applied to one turn (issue 25): what the turn's model sees and may use.

At the start of every turn (a continuation after approvals is a new turn) the execution asks
:meth:`TurnProfiles.for_turn` once; the turn keeps that :class:`TurnSetup` to its end, whatever is
written meanwhile. A tenant without a profile gets :attr:`TurnProfiles.default` (version 0): the
service's system prompt, registry and approval rule, so its turns cost one store read more.

With a profile:

- ``instructions`` replace the system prompt;
- the tools are the built-in ones, plus the tenant's MCP servers (through the pool) when it names
  some, else the service-wide MCP servers; then ``tools.allow`` / ``tools.deny`` (fnmatch) keep
  exactly the allowed ones, client tools included. A tool the model asks for anyway is refused
  as a tool error (:class:`ProfileTools`) and never runs;
- ``approval`` replaces TOOL_APPROVAL;
- ``handoff.enabled`` offers or withdraws ``handoff_to_human``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from msev15.agent.mcp_pool import McpPool, TenantServer
from msev15.agent.providers.base import ModelChoice
from msev15.agent.tools.handoff import HANDOFF_TOOL, handoff_tools
from msev15.agent.tools.registry import Tool, ToolContext, ToolRegistry, ToolResult
from msev15.store.profile_model import AgentProfile, SecretMissing, resolve_headers
from msev15.store.profiles import ProfileStore

log = logging.getLogger("agent.profiles")

MAX_CACHED = 1024  # (tenant, version) entries of derived state kept in memory


def allows(profile: AgentProfile) -> Callable[[str], bool] | None:
    """The profile's tool filter (allow, then deny), or None when it keeps every tool."""
    allow, deny = profile.tools_allow, profile.tools_deny
    if allow is None and not deny:
        return None
    seen: dict[str, bool] = {}

    def allowed(name: str) -> bool:
        verdict = seen.get(name)
        if verdict is None:
            verdict = (allow is None or any(fnmatchcase(name, p) for p in allow)) and \
                not any(fnmatchcase(name, p) for p in deny)
            if len(seen) < 4096:
                seen[name] = verdict
        return verdict

    return allowed


class ProfileTools(ToolRegistry):
    """A turn's tools: exactly the allowed ones; a call to any other name is refused, not run."""

    def __init__(self, tools: Sequence[Tool], timeout: float) -> None:
        super().__init__(timeout=timeout)
        self.add_many(tools)

    async def call(self, name: str, raw_arguments: str | Mapping[str, Any], ctx: ToolContext) -> ToolResult:
        if name not in self._local:
            return ToolResult.failure(f"tool {name!r} is not available to this agent")
        return await super().call(name, raw_arguments, ctx)


@dataclass(frozen=True, slots=True)
class TurnSetup:
    version: int  # 0: the service's defaults
    system_prompt: str
    registry: ToolRegistry
    approval: tuple[str, ...] | None = None  # None: TOOL_APPROVAL
    allowed: Callable[[str], bool] | None = None  # None: every tool (client tools included)
    model: ModelChoice | None = None  # None: the service's model settings


@dataclass(slots=True)
class _Derived:
    """What a (tenant, version) always gives: computed once, kept while the version is current."""

    profile: AgentProfile
    system_prompt: str
    allowed: Callable[[str], bool] | None
    servers: tuple[TenantServer, ...] | None  # None: the service-wide MCP servers
    model: ModelChoice | None
    tools: tuple[Tool, ...] = ()
    registry: ToolRegistry | None = None


class TurnProfiles:
    def __init__(self, store: ProfileStore | None, base: ToolRegistry, system_prompt: str, *,
                 pool: McpPool | None = None, environ: Mapping[str, str] | None = None) -> None:
        self.store = store
        self.base = base
        self.pool = pool
        self.environ = os.environ if environ is None else environ
        self.default = TurnSetup(0, system_prompt, base)
        self._handoff = {t.name: t for t in handoff_tools()}
        self._derived: dict[tuple[str, int], _Derived] = {}
        self.shortest_handoff_timeout: float | None = None  # the shortest a profile seen here set

    async def handoff_timeout(self, tenant_id: str, default: float) -> float:
        """The tenant's handoff timeout now: its profile's, else ``default`` (HANDOFF_TIMEOUT_SECONDS)."""
        record = await self.store.current(tenant_id) if self.store is not None else None
        own = record.parsed.handoff_timeout_seconds if record is not None else None
        if own is not None:
            self._saw_timeout(own)
        return default if own is None else float(own)

    def _saw_timeout(self, seconds: float) -> None:
        shortest = self.shortest_handoff_timeout
        if shortest is None or seconds < shortest:
            self.shortest_handoff_timeout = float(seconds)

    async def tools_for(self, tenant_id: str) -> ToolRegistry:
        """The tools the tenant's turns run now: what settles waiting calls outside a turn uses."""
        return (await self.for_turn(tenant_id)).registry

    async def version(self, tenant_id: str) -> int:
        """The tenant's current profile version (0: the service's defaults), without applying it."""
        return 0 if self.store is None else await self.store.current_version(tenant_id)

    async def for_turn(self, tenant_id: str, version: int | None = None) -> TurnSetup:
        """The tenant's profile applied; ``version``: its current version when the caller knows it
        already (read with the turn's admission, see Coordination.profile_version), else it is read."""
        if self.store is None:
            return self.default
        if version is None:
            record = await self.store.current(tenant_id)
        else:  # a version is never changed once written, so the store may serve it from its cache
            record = await self.store.version(tenant_id, version) if version else None
        if record is None:
            return self.default
        key = (tenant_id, record.version)
        derived = self._derived.get(key)
        if derived is None:
            if len(self._derived) >= MAX_CACHED:
                self._derived.clear()
            derived = self._derived[key] = self._derive(record.parsed, tenant_id)
        registry = await self._registry(derived)
        profile = derived.profile
        return TurnSetup(record.version, derived.system_prompt, registry, profile.approval, derived.allowed,
                         derived.model)

    def _derive(self, profile: AgentProfile, tenant_id: str) -> _Derived:
        servers: tuple[TenantServer, ...] | None = None
        if profile.mcp_servers:
            resolved = []
            for spec in profile.mcp_servers:
                try:
                    headers = resolve_headers(spec, self.environ)
                except SecretMissing as exc:
                    log.warning("tenant %s: %s; the server is left out", tenant_id, exc)
                    continue
                resolved.append(TenantServer(spec.name, spec.url, tuple(sorted(headers.items())),
                                             spec.tools or ()))
            servers = tuple(resolved)
        if profile.handoff_timeout_seconds is not None:
            self._saw_timeout(profile.handoff_timeout_seconds)
        system_prompt = profile.instructions if profile.instructions is not None else self.default.system_prompt
        model = ModelChoice(profile.model_name, profile.model_api, profile.temperature, profile.max_output_tokens)
        return _Derived(profile, system_prompt, allows(profile), servers, model if model != ModelChoice() else None)

    async def _registry(self, derived: _Derived) -> ToolRegistry:
        """The turn's tools; the registry (and its schemas) reused while they are the same objects."""
        if derived.servers is None:
            found = list(self.base.tools().values())
        else:
            local = self.base.local_tools()
            found = [*local, *await self._tenant_tools(derived.servers, frozenset(t.name for t in local))]
        enabled = derived.profile.handoff_enabled
        if enabled is False:
            found = [t for t in found if t.name != HANDOFF_TOOL]
        elif enabled and not any(t.name == HANDOFF_TOOL for t in found):
            found.append(self._handoff[HANDOFF_TOOL])
        allowed = derived.allowed
        tools = tuple(t for t in found if allowed is None or allowed(t.name))
        registry = derived.registry
        if registry is None or len(tools) != len(derived.tools) or \
                any(a is not b for a, b in zip(tools, derived.tools, strict=True)):
            registry = derived.registry = ProfileTools(tools, self.base.timeout)
            derived.tools = tools
        return registry

    async def _tenant_tools(self, servers: tuple[TenantServer, ...], reserved: frozenset[str]) -> list[Tool]:
        if not servers or self.pool is None:
            return []
        return await self.pool.tools(servers, reserved)
