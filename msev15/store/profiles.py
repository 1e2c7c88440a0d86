"""Tenant profiles: a versioned, tenant-scoped agent configuration (issue 25).

Each tenant has versions 1, 2, 3, … ; every write (``put``, ``rollback``) adds the next one and
makes it current, ``delete`` makes none current (the service's defaults, version 0) and keeps the
history. A version, once written, never changes: ``(tenant, n)`` names one profile for good, so a
reader may cache records by version forever and only has to learn *which* version is current.

The per-turn read is :meth:`ProfileStore.current_version` (or :meth:`ProfileStore.current`, which
is the same read plus a by-version cache hit). The contract: a write is used by every turn that
starts after the write returns, on every instance. How it holds:

- memory (:class:`MemoryProfiles`): one process; the current version is a dict entry, written
  before ``put`` returns.
- sqlite (``SqliteProfiles``, the API keys file): every read asks the file for the tenant's head
  row (one primary-key lookup); a commit is durable and visible to every connection before
  ``put`` returns. Records are cached per process by version (immutable).
- redis (``RedisProfiles``): every read is one GET of the tenant's head key on the shared Redis;
  the write script sets it atomically before ``put`` returns. Records are cached by version.

No store keeps a time-bounded cache of the *current* version: that would let a turn starting after
a write use the old profile.

Writes validate (:func:`~msev15.store.profile_model.parse_profile`, :class:`ProfileInvalid`), so a
stored profile always parses. History is bounded: the newest :data:`MAX_VERSIONS` are kept.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web

from msev15.store.profile_model import AgentProfile, ProfileInvalid, parse_profile

MAX_VERSIONS = 50  # per tenant: older versions are dropped (a rollback to them is a 404)
MAX_TENANTS = 10_000  # the memory store: tenants with a profile history

__all__ = ["MAX_VERSIONS", "MemoryProfiles", "PROFILES", "ProfileInvalid", "ProfileRecord", "ProfileStore",
           "ProfilesFull", "VersionConflict"]


@dataclass(frozen=True, slots=True)
class ProfileRecord:
    tenant_id: str
    version: int
    profile: dict[str, Any] = field(repr=False)  # the JSON as stored, unmasked: never log it
    updated_at: float
    updated_by: str
    parsed: AgentProfile = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "parsed", parse_profile(self.profile))


class RecordCache:
    """The shared stores' cache of records by version (a version never changes once written),
    bounded, least recently used out first. Never a cache of which version is current."""

    def __init__(self, size: int = 1024) -> None:
        self.size = size
        self._records: OrderedDict[tuple[str, int], ProfileRecord] = OrderedDict()

    def get(self, tenant_id: str, n: int) -> ProfileRecord | None:
        record = self._records.get((tenant_id, n))
        if record is not None:
            self._records.move_to_end((tenant_id, n))
        return record

    def remember(self, tenant_id: str, n: int, profile: str, at: float | str, by: str) -> ProfileRecord:
        """The record of ``(tenant, n)``, parsed from its stored JSON the first time only."""
        record = self._records.get((tenant_id, n))
        if record is None:
            record = ProfileRecord(tenant_id, n, json.loads(profile), float(at), by)
            self._records[tenant_id, n] = record
            while len(self._records) > self.size:
                self._records.popitem(last=False)
        return record


class VersionConflict(Exception):
    """A conditional write named a version that is no longer current."""

    def __init__(self, current: int) -> None:
        super().__init__(f"the current version is {current}")
        self.current = current


class ProfilesFull(Exception):
    """The store holds as many tenants' profiles as it may (the memory store's bound)."""


class ProfileStore(Protocol):
    async def current(self, tenant_id: str) -> ProfileRecord | None:
        """The current profile; None when the tenant has none or deleted it."""
        ...

    async def current_version(self, tenant_id: str) -> int:
        """The current version, 0 for the service's defaults. One cheap read (every turn makes it)."""
        ...

    async def put(self, tenant_id: str, profile: dict[str, Any], by: str, *, if_version: int | None = None) -> int:
        """Store ``profile`` as the next version and make it current; its number. ProfileInvalid for
        a bad profile; VersionConflict(current) when ``if_version`` is given and is not current."""
        ...

    async def versions(self, tenant_id: str) -> list[ProfileRecord]:
        """Every kept version, newest first."""
        ...

    async def version(self, tenant_id: str, n: int) -> ProfileRecord | None:
        ...

    async def rollback(self, tenant_id: str, n: int, by: str) -> int:
        """A new version equal to version ``n``; its number. LookupError when ``n`` is not kept."""
        ...

    async def delete(self, tenant_id: str, by: str) -> bool:
        """Back to the service's defaults, history kept; False when no profile was current."""
        ...

    async def close(self) -> None: ...


class MemoryProfiles:
    """In this process: at most ``max_tenants`` tenants, ``max_versions`` versions each."""

    def __init__(self, *, max_tenants: int = MAX_TENANTS, max_versions: int = MAX_VERSIONS) -> None:
        self.max_tenants = max_tenants
        self.max_versions = max_versions
        self._history: dict[str, dict[int, ProfileRecord]] = {}
        self._latest: dict[str, int] = {}
        self._current: dict[str, int] = {}

    async def current(self, tenant_id: str) -> ProfileRecord | None:
        n = self._current.get(tenant_id, 0)
        return self._history[tenant_id][n] if n else None

    async def current_version(self, tenant_id: str) -> int:
        return self._current.get(tenant_id, 0)

    def _append(self, tenant_id: str, profile: dict[str, Any], by: str) -> int:
        if tenant_id not in self._history and len(self._history) >= self.max_tenants:
            raise ProfilesFull(f"at most {self.max_tenants} tenants may have a profile")
        n = self._latest.get(tenant_id, 0) + 1
        record = ProfileRecord(tenant_id, n, profile, time.time(), by)  # validates before any change
        history = self._history.setdefault(tenant_id, {})
        history[n] = record
        history.pop(n - self.max_versions, None)
        self._latest[tenant_id] = self._current[tenant_id] = n
        return n

    async def put(self, tenant_id: str, profile: dict[str, Any], by: str, *, if_version: int | None = None) -> int:
        current = self._current.get(tenant_id, 0)
        if if_version is not None and if_version != current:
            raise VersionConflict(current)
        return self._append(tenant_id, stored_copy(profile), by)

    async def versions(self, tenant_id: str) -> list[ProfileRecord]:
        return sorted(self._history.get(tenant_id, {}).values(), key=lambda r: r.version, reverse=True)

    async def version(self, tenant_id: str, n: int) -> ProfileRecord | None:
        return self._history.get(tenant_id, {}).get(n)

    async def rollback(self, tenant_id: str, n: int, by: str) -> int:
        record = self._history.get(tenant_id, {}).get(n)
        if record is None:
            raise LookupError(f"version {n} is not kept")
        return self._append(tenant_id, record.profile, by)

    async def delete(self, tenant_id: str, by: str) -> bool:
        if not self._current.get(tenant_id):
            return False
        self._current[tenant_id] = 0
        return True

    async def close(self) -> None:
        pass


def stored_copy(profile: dict[str, Any]) -> dict[str, Any]:
    """A validated private copy of ``profile`` (the caller may change its own afterwards)."""
    parse_profile(profile)  # ProfileInvalid before anything else (also for values JSON cannot hold)
    copied: dict[str, Any] = json.loads(json.dumps(profile))
    return copied


PROFILES: web.AppKey[ProfileStore] = web.AppKey("msev15.profiles")
