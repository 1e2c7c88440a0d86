"""What every session store offers: the interface the runner and the handlers use.

Three implementations, chosen by SESSION_STORE: ``memory`` (the spec's default, in-process; the
fast path), ``sqlite`` (durable on one machine) and ``redis`` (shared by many instances). One
contract test suite (tests/test_session_stores.py) runs against all three.

Snapshots returned here are plain values (:class:`~msev15.store.sessions.Session` with its
messages, :class:`~msev15.store.sessions.Page`); changing them changes nothing stored.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from aiohttp import web

from msev15.store.sessions import Message, Page, Session

StoreStatus = Literal["healthy", "unavailable"]


class StoreUnavailable(Exception):
    """The store cannot be reached or written now (Redis down, disk full): 503 store_unavailable."""


class FencedOut(StoreUnavailable):
    """The turn no longer holds its session (another instance took it over): it must not write."""


# Set by the runner around a turn that holds its session through cross-instance coordination:
# the token a shared store checks before it commits the turn (see store/redis_sessions.py).
FENCE: contextvars.ContextVar[str | None] = contextvars.ContextVar("msev15_session_fence", default=None)


@dataclass(frozen=True, slots=True)
class Looked:
    """What a turn's admission read in one look (``AdmissionLook`` in agent/coordination.py): the
    session's mode (None: no live session, or not asked), whether it has a paused step (None: not
    asked), the tenant's profile version (None: not known to the look), the session's context as
    the model reads it (None: not asked)."""

    mode: str | None
    paused: bool | None
    profile_version: int | None
    context: list[dict[str, Any]] | None = None
    # With a context: whether it is still the session's (this instance wrote nothing to the
    # session since the read began); None: no way to tell, so it holds only for this moment.
    current: Callable[[], bool] | None = None


def storable(value: Any) -> Any:
    """``value`` (text, or the JSON-like dicts and lists of a turn's steps) with every lone
    surrogate replaced by U+FFFD; the same object when there is none (the usual case: a walk that
    builds nothing).

    A model can send ``"\\ud800"``: valid JSON, but no UTF-8 encoding exists for it, so SQLite's
    driver and Redis' scripts refuse it, and a model API would refuse it in the next request."""
    return value if _encodable(value) else _replaced(value)


def _encodable(value: Any) -> bool:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    if isinstance(value, dict):
        return all(_encodable(v) for v in value.values())
    if isinstance(value, list):
        return all(_encodable(v) for v in value)
    return True


def _replaced(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(value, dict):
        return {k: _replaced(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_replaced(v) for v in value]
    return value


class Sessions(Protocol):
    kind: str  # "memory", "sqlite" or "redis"

    @property
    def evicted(self) -> int:
        """Sessions this instance dropped by a session cap (a metric; no I/O)."""
        ...

    async def get(self, tenant_id: str, session_id: str) -> Session | None:
        """The session with its messages (all of them: tool steps included), or None."""
        ...

    async def context(self, tenant_id: str, session_id: str, limit: int) -> list[dict[str, Any]]:
        """The last ``limit`` messages in the model's shape, never starting with an orphaned tool result."""
        ...

    async def commit_turn(self, tenant_id: str, session_id: str, user_text: str, started_at: float,
                          steps: Iterable[dict[str, Any]], answer: str) -> int:
        """Append a whole turn atomically; returns the session's visible message count."""
        ...

    async def commit_messages(self, tenant_id: str, session_id: str, messages: list[Message],
                              started_at: float) -> int:
        """Append messages atomically outside a turn (what a customer or an operator wrote while a
        person holds the session), under the same caps as a turn; the visible message count."""
        ...

    async def mode(self, tenant_id: str, session_id: str) -> str | None:
        """The session's mode, or None when there is no such session: one small read (every chat
        asks it first, while handoff is enabled)."""
        ...

    async def set_mode(self, tenant_id: str, session_id: str, mode: str, expect: str | None = None) -> bool:
        """Set who answers the session (``agent``, ``waiting_for_human``, ``human``), atomically and
        only if its mode is ``expect`` when given. False when the session is unknown or the mode
        differed. The mode is part of the session: :meth:`get` and :meth:`page` report it."""
        ...

    async def page(self, tenant_id: str, limit: int, offset: int) -> Page:
        """Newest activity first, without a full scan."""
        ...

    async def delete(self, tenant_id: str, session_id: str) -> int | None:
        """Remove a session; the visible messages deleted, or None if unknown."""
        ...

    async def expire(self) -> int:
        """Drop idle sessions past the TTL (stores that expire by themselves return 0)."""
        ...

    async def gone(self) -> list[tuple[str, str]]:
        """(tenant, session) of the sessions that expired since the last call (here, or in Redis
        for every instance), each reported once: the sweeper drops what hangs on them (handoff
        records, ratings, the session stream). A session deleted through the API is not here:
        its route drops those itself."""
        ...

    async def count(self) -> int:
        """Sessions held, all tenants."""
        ...

    def held(self) -> int:
        """Sessions held, all tenants, as last known: no I/O, for the metrics scrape. Exact for the
        memory store; the shared stores refresh it on their own writes and in ``expire()``."""
        ...

    async def status(self) -> StoreStatus:
        """Readiness: can the store be used right now? Never blocks for long."""
        ...

    async def close(self) -> None: ...


# Filled by the topology (msev15.topology), which picks and opens the store SESSION_STORE names.
SESSIONS: web.AppKey[Sessions] = web.AppKey("msev15.sessions")
