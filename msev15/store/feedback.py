"""Answer feedback: a thumbs up or down (and a comment) on a completed turn, kept with the session.

A turn's stream is kept only for STREAM_RETENTION_SECONDS; a rating may come much later. So the
store also keeps the *index* of completed turns (tenant, session, turn id), written by a bus
subscriber when each turn completes (off the turn's path), for as long as a session lives
(SESSION_TTL_SECONDS; 30 days when sessions never expire). A rating is accepted only for a
turn in that index (or still in the turn log), and only in the caller's tenant.

One rating per turn and caller: rating again replaces it (``rate`` says so). Deleting a session
deletes its ratings (``forget``): a comment is the customer's words. Implementations:
:class:`MemoryFeedback` here, ``SqliteFeedback`` (the session database file) and
``RedisFeedback``; the topology builds the one that matches the session store.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, Protocol

from aiohttp import web

Rating = Literal["up", "down"]
RATINGS: tuple[Rating, ...] = ("up", "down")
MAX_COMMENT_CHARS = 2000
DEFAULT_KEEP_SECONDS = 30 * 24 * 3600  # the turn index's lifetime when sessions never expire
MAX_PER_TENANT = 100_000  # ratings kept per tenant (the oldest go first)
MAX_INDEXED_TURNS = 100_000  # the memory index: the newest completed turns (a few hundred bytes each)


@dataclass(frozen=True, slots=True)
class Feedback:
    tenant_id: str
    session_id: str
    turn_id: str
    caller: str  # the API key id or token subject; "anonymous" under AUTH_MODE=none
    rating: Rating
    comment: str | None
    created_at: float  # epoch seconds of the latest rating


@dataclass(frozen=True, slots=True)
class CompletedTurn:
    tenant_id: str
    session_id: str
    turn_id: str
    completed_at: float


class FeedbackStore(Protocol):
    async def remember(self, turns: Iterable[CompletedTurn]) -> None:
        """Add completed turns to the index (a batch, from the bus subscriber)."""
        ...

    async def known(self, tenant_id: str, session_id: str, turn_id: str) -> bool:
        """Is this a completed turn of this tenant's session?"""
        ...

    async def rate(self, feedback: Feedback) -> bool:
        """Store ``feedback``; True when it replaced the same caller's earlier rating of the turn."""
        ...

    async def list(self, tenant_id: str, *, rating: Rating | None = None, since: float | None = None,
                   limit: int = 50) -> list[Feedback]:
        """The tenant's ratings, newest first."""
        ...

    async def forget(self, tenant_id: str, session_id: str) -> None:
        """Drop the session's ratings and turns (the session was deleted: its customer data goes)."""
        ...

    async def close(self) -> None: ...


def keep_seconds(session_ttl_seconds: float) -> float:
    return session_ttl_seconds if session_ttl_seconds > 0 else DEFAULT_KEEP_SECONDS


class MemoryFeedback:
    """In this process (the memory topology): bounded by MAX_INDEXED_TURNS and MAX_PER_TENANT."""

    def __init__(self, session_ttl_seconds: float = 0, *, max_turns: int = MAX_INDEXED_TURNS,
                 max_per_tenant: int = MAX_PER_TENANT) -> None:
        self.keep = keep_seconds(session_ttl_seconds)
        self.max_turns = max_turns
        self.max_per_tenant = max_per_tenant
        self._turns: OrderedDict[tuple[str, str, str], float] = OrderedDict()
        self._ratings: dict[str, OrderedDict[tuple[str, str, str], Feedback]] = {}

    async def remember(self, turns: Iterable[CompletedTurn]) -> None:
        index = self._turns
        for turn in turns:
            index[turn.tenant_id, turn.session_id, turn.turn_id] = turn.completed_at
        while len(index) > self.max_turns:
            index.popitem(last=False)

    async def known(self, tenant_id: str, session_id: str, turn_id: str) -> bool:
        at = self._turns.get((tenant_id, session_id, turn_id))
        return at is not None and time.time() - at <= self.keep

    async def rate(self, feedback: Feedback) -> bool:
        ratings = self._ratings.setdefault(feedback.tenant_id, OrderedDict())
        key = (feedback.session_id, feedback.turn_id, feedback.caller)
        replaced = ratings.pop(key, None) is not None
        ratings[key] = feedback  # the newest last
        while len(ratings) > self.max_per_tenant:
            ratings.popitem(last=False)
        return replaced

    async def list(self, tenant_id: str, *, rating: Rating | None = None, since: float | None = None,
                   limit: int = 50) -> list[Feedback]:
        found: list[Feedback] = []
        for item in reversed(self._ratings.get(tenant_id, {}).values()):
            if since is not None and item.created_at < since:
                break  # newest first: the rest are older
            if rating is None or item.rating == rating:
                found.append(item)
                if len(found) >= limit:
                    break
        return found

    async def forget(self, tenant_id: str, session_id: str) -> None:
        # A scan of the bounded index: deleting a session is rare, rating and listing are not.
        for key in [k for k in self._turns if k[0] == tenant_id and k[1] == session_id]:
            del self._turns[key]
        ratings = self._ratings.get(tenant_id)
        if ratings is not None:
            for key in [k for k in ratings if k[0] == session_id]:
                del ratings[key]

    async def close(self) -> None:
        pass


FEEDBACK: web.AppKey[FeedbackStore] = web.AppKey("msev15.feedback")
