"""In-memory conversation history, isolated per tenant.

Each tenant has its own ``OrderedDict`` of sessions kept in last-activity order (oldest first), so
listing newest-first at any offset walks from the end without sorting, expiry pops from the front,
and reads, writes and deletes are O(1). A session holds every message the model needs for context
(tool calls and results included); the history endpoint shows only the user and assistant
messages (``visible``).

A turn's messages are committed together when the turn completes; a failed turn commits nothing
(the session is exactly as it was before the turn), so history never holds half an answer.
"""

from __future__ import annotations

import itertools
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple


class Message(NamedTuple):
    """One stored message. ``extra`` holds tool calls (assistant) or the call id (tool).

    A tuple, not an object: the garbage collector stops tracking tuples of plain values, so a
    large store does not lengthen every full collection.
    """

    role: str
    content: str | None
    ts: float
    extra: Any = None

    @property
    def visible(self) -> bool:
        return self.role == "user" or (self.role == "assistant" and self.extra is None)

    def to_model(self) -> dict[str, Any]:
        """The OpenAI Chat Completions shape."""
        if self.role == "tool":
            return {"role": "tool", "tool_call_id": self.extra, "content": self.content}
        if self.extra is not None:
            return {"role": "assistant", "content": self.content, "tool_calls": self.extra}
        return {"role": self.role, "content": self.content}


class Session:
    __slots__ = ("session_id", "created_at", "last_activity", "messages", "visible_count")

    def __init__(self, session_id: str, now: float) -> None:
        self.session_id = session_id
        self.created_at = now
        self.last_activity = now
        self.messages: list[Message] = []
        self.visible_count = 0


@dataclass(frozen=True, slots=True)
class Page:
    total: int
    sessions: list[Session]


class SessionStore:
    def __init__(self, ttl_seconds: float, clock: Callable[[], float] = time.time,
                 max_messages: int = 1000, max_sessions: int = 250_000) -> None:
        self.ttl = ttl_seconds if ttl_seconds > 0 else math.inf  # 0: sessions never expire
        self.max_messages = max_messages
        self.max_sessions = max_sessions
        self._clock = clock
        self._tenants: dict[str, OrderedDict[str, Session]] = {}
        # Every session of every tenant in last-activity order: expiry and the global cap pop
        # from its front, so neither walks the tenants.
        self._lru: OrderedDict[tuple[str, str], Session] = OrderedDict()
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._lru)

    def _live(self, tenant_id: str, session_id: str) -> Session | None:
        sessions = self._tenants.get(tenant_id)
        session = sessions.get(session_id) if sessions else None
        if session is not None and session.last_activity + self.ttl <= self._clock():
            self._drop(tenant_id, session_id)
            return None
        return session

    def _drop(self, tenant_id: str, session_id: str) -> Session | None:
        sessions = self._tenants.get(tenant_id)
        if not sessions:
            return None
        session = sessions.pop(session_id, None)
        self._lru.pop((tenant_id, session_id), None)
        if not sessions:
            del self._tenants[tenant_id]
        return session

    def get(self, tenant_id: str, session_id: str) -> Session | None:
        return self._live(tenant_id, session_id)

    def context(self, tenant_id: str, session_id: str, limit: int) -> list[dict[str, Any]]:
        """The last ``limit`` messages for the model, never starting with an orphaned tool result.

        Even a single turn longer than ``limit`` (many tool rounds) leaves its latest messages."""
        session = self._live(tenant_id, session_id)
        if session is None:
            return []
        tail = session.messages[-limit:]
        # A tool result must follow its call: skip results cut off from their assistant message.
        start = next((i for i, m in enumerate(tail) if m.role != "tool"), len(tail))
        return [m.to_model() for m in tail[start:]]

    def commit_turn(self, tenant_id: str, session_id: str, user_text: str, started_at: float,
                    steps: Iterable[dict[str, Any]], answer: str) -> int:
        """Append a whole turn (user message, tool exchange, answer). Returns the visible count."""
        now = self._clock()
        # Build the turn before touching the session: a malformed step changes nothing.
        turn = [Message("user", user_text, started_at)]
        for step in steps:
            if step["role"] == "tool":
                turn.append(Message("tool", step["content"], now, step["tool_call_id"]))
            else:
                turn.append(Message("assistant", step.get("content"), now, step["tool_calls"]))
        turn.append(Message("assistant", answer, now))
        session = self._live(tenant_id, session_id)
        sessions = self._tenants.setdefault(tenant_id, OrderedDict())
        key = (tenant_id, session_id)
        if session is None:
            session = sessions[session_id] = self._lru[key] = Session(session_id, started_at)
            if len(self._lru) > self.max_sessions:
                self._evict_oldest()
        else:
            sessions.move_to_end(session_id)
            self._lru.move_to_end(key)
        session.messages += turn
        session.visible_count += 2
        session.last_activity = now
        if len(session.messages) > self.max_messages:
            self._trim(session)
        return session.visible_count

    def _evict_oldest(self) -> None:
        """Over SESSION_MAX_SESSIONS: the least recently active session, of any tenant, goes."""
        (tenant_id, session_id), _ = self._lru.popitem(last=False)
        self._drop(tenant_id, session_id)
        self.evicted += 1

    def _trim(self, session: Session) -> None:
        """Drop the oldest whole turns so a long-lived session stays within max_messages."""
        messages = session.messages
        excess = len(messages) - self.max_messages
        cut = next((i for i in range(excess, len(messages)) if messages[i].role == "user"), excess)
        session.visible_count -= sum(1 for m in messages[:cut] if m.visible)
        del messages[:cut]

    def page(self, tenant_id: str, limit: int, offset: int) -> Page:
        """Newest activity first. Cost is O(min(offset, total - offset) + limit), never a sort."""
        self.expire()
        sessions = self._tenants.get(tenant_id)
        if not sessions:
            return Page(0, [])
        total = len(sessions)
        if offset * 2 <= total:  # walk from whichever end is nearer
            window = list(itertools.islice(reversed(sessions.values()), offset, offset + limit))
        else:
            stop = max(0, total - offset)
            window = list(itertools.islice(sessions.values(), max(0, stop - limit), stop))
            window.reverse()
        return Page(total, window)

    def delete(self, tenant_id: str, session_id: str) -> int | None:
        """Remove a session; the number of visible messages deleted, or None if unknown."""
        if self._live(tenant_id, session_id) is None:
            return None
        session = self._drop(tenant_id, session_id)
        return session.visible_count if session else None

    def expire(self) -> int:
        """Drop sessions idle for longer than the TTL. O(expired)."""
        cutoff = self._clock() - self.ttl
        dropped = 0
        while self._lru:
            (tenant_id, session_id), session = next(iter(self._lru.items()))
            if session.last_activity > cutoff:
                break
            self._drop(tenant_id, session_id)
            dropped += 1
        return dropped
