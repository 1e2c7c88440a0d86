"""In-memory conversation history, isolated per tenant.

Each tenant has its own ``OrderedDict`` of sessions kept in last-activity order (oldest first), so
listing newest-first at any offset walks from the end without sorting, expiry pops from the front,
and reads, writes and deletes are O(1). A session holds every message the model needs for context
(tool calls and results included); the history endpoint shows only the user and assistant
messages (``visible``).

A turn's messages are committed together when the turn completes; a failed turn commits nothing
(the session is exactly as it was before the turn), so history never holds half an answer.

Memory is bounded per tenant, so one tenant's flood never costs another its history: a tenant
keeps at most ``max_sessions_per_tenant`` sessions (its own least recently active go first), and
when all tenants together reach ``max_sessions`` the tenant holding the most loses its least
recently active one. Each session keeps at most ``max_bytes`` of message text (UTF-8), dropping
its oldest whole turns first; the newest turn is always kept.
"""

from __future__ import annotations

import itertools
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

MODES = ("agent", "waiting_for_human", "human")  # who answers the session's customer


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}")
    return mode


class Message(NamedTuple):
    """One stored message. ``extra`` holds tool calls (assistant), the call id (tool), or, for a
    message a person wrote into the conversation, ``{"author": {...}}`` (assistant).

    A tuple, not an object: the garbage collector stops tracking tuples of plain values, so a
    large store does not lengthen every full collection.
    """

    role: str
    content: str | None
    ts: float
    extra: Any = None

    @property
    def visible(self) -> bool:
        return self.role == "user" or (self.role == "assistant" and (self.extra is None or self.author is not None))

    @property
    def author(self) -> dict[str, Any] | None:
        """Who wrote an assistant message that a person wrote (an operator), else None."""
        extra = self.extra
        return extra.get("author") if isinstance(extra, dict) else None

    def to_model(self) -> dict[str, Any]:
        """The OpenAI Chat Completions shape (a person's message is a plain assistant message)."""
        if self.role == "tool":
            return {"role": "tool", "tool_call_id": self.extra, "content": self.content}
        if isinstance(self.extra, list):
            return {"role": "assistant", "content": self.content, "tool_calls": self.extra}
        return {"role": self.role, "content": self.content}


def _utf8_len(text: str) -> int:
    # surrogatepass: a model can echo a lone surrogate ("\ud800"); it is stored, so it is counted.
    return len(text.encode("utf-8", "surrogatepass"))


def message_bytes(message: Message) -> int:
    """What a message costs against SESSION_MAX_BYTES: its text and tool-call arguments (UTF-8)."""
    size = _utf8_len(message.content) if message.content else 0
    extra = message.extra
    if isinstance(extra, list):  # an assistant's tool calls
        for call in extra:
            function = call.get("function") or {}
            size += _utf8_len(str(function.get("arguments") or "")) + len(str(function.get("name") or ""))
    return size


def turn_messages(user_text: str, started_at: float, steps: Iterable[dict[str, Any]], answer: str,
                  now: float) -> list[Message]:
    """A whole turn as stored messages (user message, tool exchange, answer): every store builds it
    before it writes anything, so a malformed step changes nothing."""
    turn = [Message("user", user_text, started_at)]
    for step in steps:
        if step["role"] == "tool":
            turn.append(Message("tool", step["content"], now, step["tool_call_id"]))
        else:
            turn.append(Message("assistant", step.get("content"), now, step["tool_calls"]))
    turn.append(Message("assistant", answer, now))
    return turn


class Session:
    __slots__ = ("created_at", "last_activity", "messages", "mode", "session_id", "size", "visible_count")

    def __init__(self, session_id: str, now: float, mode: str = "agent") -> None:
        self.session_id = session_id
        self.mode = mode
        self.created_at = now
        self.last_activity = now
        self.messages: list[Message] = []
        self.visible_count = 0
        self.size = 0  # message_bytes() of every message


@dataclass(frozen=True, slots=True)
class Page:
    total: int
    sessions: list[Session]


class _Counts:
    """Sessions per tenant, with the tenant holding the most found in O(1) (counts move by one)."""

    __slots__ = ("_buckets", "of", "top")

    def __init__(self) -> None:
        self.of: dict[str, int] = {}
        self._buckets: dict[int, dict[str, None]] = {}  # count -> tenants (insertion-ordered)
        self.top = 0

    def _move(self, tenant_id: str, old: int, new: int) -> None:
        if old:
            bucket = self._buckets[old]
            del bucket[tenant_id]
            if not bucket:
                del self._buckets[old]
                if self.top == old:
                    self.top = new if new else max(self._buckets, default=0)
        if new:
            self._buckets.setdefault(new, {})[tenant_id] = None
            self.of[tenant_id] = new
            self.top = max(self.top, new)
        else:
            del self.of[tenant_id]

    def add(self, tenant_id: str, delta: int) -> None:
        old = self.of.get(tenant_id, 0)
        self._move(tenant_id, old, old + delta)

    def largest(self) -> str:
        return next(iter(self._buckets[self.top]))


GONE_KEPT = 100_000  # expired sessions remembered for the sweeper's cascade (see Sessions.gone)


class SessionStore:
    def __init__(self, ttl_seconds: float, clock: Callable[[], float] = time.time,
                 max_messages: int = 1000, max_sessions: int = 250_000, *,
                 max_sessions_per_tenant: int = 0, max_bytes: int = 0) -> None:
        self.ttl = ttl_seconds if ttl_seconds > 0 else math.inf  # 0: sessions never expire
        self.max_messages = max_messages
        self.max_sessions = max_sessions
        self.max_sessions_per_tenant = max_sessions_per_tenant or max_sessions
        self.max_bytes = max_bytes  # 0: no byte budget
        self._counts = _Counts()
        self._clock = clock
        self._tenants: dict[str, OrderedDict[str, Session]] = {}
        # Every session of every tenant in last-activity order: expiry and the global cap pop
        # from its front, so neither walks the tenants.
        self._lru: OrderedDict[tuple[str, str], Session] = OrderedDict()
        self.evicted = 0
        # Sessions that expired, until the sweeper takes them (to drop what hangs on them).
        self.gone: deque[tuple[str, str]] = deque(maxlen=GONE_KEPT)

    def __len__(self) -> int:
        return len(self._lru)

    def _live(self, tenant_id: str, session_id: str) -> Session | None:
        sessions = self._tenants.get(tenant_id)
        session = sessions.get(session_id) if sessions else None
        if session is not None and session.last_activity + self.ttl <= self._clock():
            self._drop(tenant_id, session_id)
            self.gone.append((tenant_id, session_id))
            return None
        return session

    def _drop(self, tenant_id: str, session_id: str) -> Session | None:
        sessions = self._tenants.get(tenant_id)
        if not sessions:
            return None
        session = sessions.pop(session_id, None)
        if session is not None:
            self._lru.pop((tenant_id, session_id), None)
            self._counts.add(tenant_id, -1)
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
        turn = turn_messages(user_text, started_at, steps, answer, now)  # before touching the session
        return self._commit(tenant_id, session_id, turn, started_at, now)

    def commit_messages(self, tenant_id: str, session_id: str, turn: list[Message], started_at: float) -> int:
        """Append messages together (what a customer or an operator wrote while a person holds the
        session). Returns the visible count."""
        return self._commit(tenant_id, session_id, turn, started_at, self._clock())

    def _commit(self, tenant_id: str, session_id: str, turn: list[Message], started_at: float, now: float) -> int:
        session = self._live(tenant_id, session_id)
        sessions = self._tenants.setdefault(tenant_id, OrderedDict())
        key = (tenant_id, session_id)
        if session is None:
            session = sessions[session_id] = self._lru[key] = Session(session_id, started_at)
            self._counts.add(tenant_id, 1)
            if len(sessions) > self.max_sessions_per_tenant:
                self._evict_from(tenant_id)
            if len(self._lru) > self.max_sessions:
                self._evict_from(self._counts.largest())
        else:
            sessions.move_to_end(session_id)
            self._lru.move_to_end(key)
        session.messages += turn
        session.size += sum(message_bytes(m) for m in turn)
        session.visible_count += sum(1 for m in turn if m.visible)
        session.last_activity = now
        if len(session.messages) > self.max_messages:
            self._trim(session, len(session.messages) - self.max_messages)
        if self.max_bytes and session.size > self.max_bytes:
            self._trim_bytes(session)
        return session.visible_count

    def mode(self, tenant_id: str, session_id: str) -> str | None:
        session = self._live(tenant_id, session_id)
        return None if session is None else session.mode

    def set_mode(self, tenant_id: str, session_id: str, mode: str, expect: str | None = None) -> bool:
        """Set the session's mode (only if it is ``expect``, when given); False when the session is
        unknown or its mode was not ``expect``."""
        check_mode(mode)
        session = self._live(tenant_id, session_id)
        if session is None or (expect is not None and session.mode != expect):
            return False
        session.mode = mode
        return True

    def _evict_from(self, tenant_id: str) -> None:
        """Drop the tenant's least recently active session (over a session cap)."""
        sessions = self._tenants[tenant_id]
        self._drop(tenant_id, next(iter(sessions)))
        self.evicted += 1

    def _trim(self, session: Session, excess: int) -> None:
        """Drop at least ``excess`` of the oldest messages, cutting only at a turn's start."""
        messages = session.messages
        cut = next((i for i in range(excess, len(messages)) if messages[i].role == "user"), excess)
        session.visible_count -= sum(1 for m in messages[:cut] if m.visible)
        session.size -= sum(message_bytes(m) for m in messages[:cut])
        del messages[:cut]

    def _trim_bytes(self, session: Session) -> None:
        """Over SESSION_MAX_BYTES: drop the oldest whole turns; the newest turn always stays."""
        over, freed, cut = session.size - self.max_bytes, 0, 0
        for i, message in enumerate(session.messages):
            if message.role == "user" and i:  # a turn starts at i
                cut = i
                if freed >= over:
                    break
            freed += message_bytes(message)
        if cut:
            self._trim(session, cut)

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
            self.gone.append((tenant_id, session_id))
            dropped += 1
        return dropped
