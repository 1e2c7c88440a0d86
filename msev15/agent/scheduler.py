"""Fair turn scheduling: tenants, then sessions, then turns.

A session runs one turn at a time, in arrival order. Sessions with a turn waiting are queued per
tenant (first come, first served within the tenant), and tenants take turns round-robin for the
free slots, so a tenant with a thousand queued turns and a tenant with one each get the next free
slot alternately. Limits: ``max_running`` turns at once in all, ``max_running_per_tenant`` for one
tenant, and ``max_queued_per_tenant`` turns waiting for one tenant (beyond it ``push`` refuses).

Pure bookkeeping, no asyncio: the runner asks ``next()`` for what to start and tells ``done()``.
Every operation is O(1) but ``remove()`` (O(turns queued in that session)) and ``next()``, which
skips tenants at their own limit (O(tenants) in the worst case).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from typing import Generic, TypeVar

T = TypeVar("T")
SessionKey = tuple[str, str]  # (tenant_id, session_id)


class QueueFull(Exception):
    """The tenant already has ``max_queued_per_tenant`` turns waiting."""


class _Tenant(Generic[T]):
    __slots__ = ("ready", "running", "queued")

    def __init__(self) -> None:
        self.ready: deque[SessionKey] = deque()  # sessions with a turn waiting and none running
        self.running = 0
        self.queued = 0


class FairScheduler(Generic[T]):
    def __init__(self, max_running: int, max_running_per_tenant: int, max_queued_per_tenant: int) -> None:
        self.max_running = max_running
        self.max_running_per_tenant = max_running_per_tenant
        self.max_queued_per_tenant = max_queued_per_tenant
        self.running = 0
        self.queued = 0
        self._sessions: dict[SessionKey, deque[T]] = {}  # waiting turns, per session with any
        self._busy: set[SessionKey] = set()  # sessions with a turn running
        self._tenants: dict[str, _Tenant[T]] = {}
        self._rotation: deque[str] = deque()  # tenants with a ready session, in turn order

    def push(self, key: SessionKey, item: T) -> None:
        tenant = self._tenants.get(key[0])
        if tenant is None:
            tenant = self._tenants[key[0]] = _Tenant()
        if tenant.queued >= self.max_queued_per_tenant:
            if not tenant.running and not tenant.queued:
                del self._tenants[key[0]]
            raise QueueFull(key[0])
        waiting = self._sessions.get(key)
        if waiting is None:
            waiting = self._sessions[key] = deque()
            if key not in self._busy:
                self._make_ready(tenant, key)
        waiting.append(item)
        tenant.queued += 1
        self.queued += 1

    def _make_ready(self, tenant: _Tenant[T], key: SessionKey) -> None:
        if not tenant.ready:
            self._rotation.append(key[0])
        tenant.ready.append(key)

    def next(self) -> tuple[SessionKey, T] | None:
        """The next turn to start, marked running; None when nothing may start now."""
        if self.running >= self.max_running:
            return None
        for _ in range(len(self._rotation)):
            name = self._rotation.popleft()
            tenant = self._tenants[name]
            if tenant.running >= self.max_running_per_tenant:
                self._rotation.append(name)  # keeps its place for when a slot frees
                continue
            key = tenant.ready.popleft()
            if tenant.ready:
                self._rotation.append(name)
            waiting = self._sessions[key]
            item = waiting.popleft()
            if not waiting:
                del self._sessions[key]
            self._busy.add(key)
            tenant.running += 1
            tenant.queued -= 1
            self.running += 1
            self.queued -= 1
            return key, item
        return None

    def done(self, key: SessionKey) -> None:
        """The running turn of ``key`` ended; its session's next turn (if any) becomes ready."""
        self._busy.remove(key)
        tenant = self._tenants[key[0]]
        tenant.running -= 1
        self.running -= 1
        if key in self._sessions:
            self._make_ready(tenant, key)
        elif not tenant.running and not tenant.queued:
            del self._tenants[key[0]]

    def remove(self, key: SessionKey, item: Hashable) -> bool:
        """Take a waiting turn out (cancel). False if it is not waiting."""
        waiting = self._sessions.get(key)
        if waiting is None or item not in waiting:
            return False
        waiting.remove(item)  # type: ignore[arg-type]
        tenant = self._tenants[key[0]]
        tenant.queued -= 1
        self.queued -= 1
        if not waiting:
            del self._sessions[key]
            if key not in self._busy:
                tenant.ready.remove(key)
                if not tenant.ready:
                    self._rotation.remove(key[0])
                if not tenant.running and not tenant.queued:
                    del self._tenants[key[0]]
        return True

    def waiting(self, key: SessionKey) -> list[T]:
        return list(self._sessions.get(key, ()))

    def busy(self, key: SessionKey) -> bool:
        """Does the session have a turn running or waiting?"""
        return key in self._busy or key in self._sessions

    def tenant_load(self, tenant_id: str) -> tuple[int, int]:
        """(running, queued) for one tenant."""
        tenant = self._tenants.get(tenant_id)
        return (tenant.running, tenant.queued) if tenant else (0, 0)
