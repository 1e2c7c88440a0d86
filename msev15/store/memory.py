"""The ``memory`` session store: :class:`~msev15.store.sessions.SessionStore` behind the async
:class:`~msev15.store.base.Sessions` interface. The spec's default and the fast path: every call
completes without suspending."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from msev15.store.base import StoreStatus
from msev15.store.sessions import Message, Page, Session, SessionStore


class MemorySessions:
    kind = "memory"

    def __init__(self, store: SessionStore) -> None:
        self.store = store

    async def get(self, tenant_id: str, session_id: str) -> Session | None:
        return self.store.get(tenant_id, session_id)

    async def context(self, tenant_id: str, session_id: str, limit: int) -> list[dict[str, Any]]:
        return self.store.context(tenant_id, session_id, limit)

    async def commit_turn(self, tenant_id: str, session_id: str, user_text: str, started_at: float,
                          steps: Iterable[dict[str, Any]], answer: str) -> int:
        return self.store.commit_turn(tenant_id, session_id, user_text, started_at, steps, answer)

    async def commit_messages(self, tenant_id: str, session_id: str, messages: list[Message],
                              started_at: float) -> int:
        return self.store.commit_messages(tenant_id, session_id, messages, started_at)

    async def mode(self, tenant_id: str, session_id: str) -> str | None:
        return self.store.mode(tenant_id, session_id)

    async def set_mode(self, tenant_id: str, session_id: str, mode: str, expect: str | None = None) -> bool:
        return self.store.set_mode(tenant_id, session_id, mode, expect)

    async def page(self, tenant_id: str, limit: int, offset: int) -> Page:
        return self.store.page(tenant_id, limit, offset)

    async def delete(self, tenant_id: str, session_id: str) -> int | None:
        return self.store.delete(tenant_id, session_id)

    async def expire(self) -> int:
        return self.store.expire()

    async def gone(self) -> list[tuple[str, str]]:
        gone = list(self.store.gone)
        self.store.gone.clear()
        return gone

    async def count(self) -> int:
        return len(self.store)

    def held(self) -> int:
        return len(self.store)

    @property
    def evicted(self) -> int:
        return self.store.evicted

    async def status(self) -> StoreStatus:
        return "healthy"

    async def close(self) -> None:
        return None
