"""Session tails held between turns, for the shared session stores (Redis, PostgreSQL): what
an instance last read or wrote of each session's newest messages, with the revision of the list
it was read at (:class:`HeldTails`); and :class:`WriteMarks`, which tells whether this instance
wrote a session since a read of it began.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

from msev15.store.sessions import Message

TAILS_MAX_CHARS = 8 << 20  # the stored size of the session tails kept for context reads


class HeldTails:
    """Each session's context tail as this instance last read or wrote it, with the list's revision
    then (a commit writes a unique one). A context read sends the revision, and the store sends the
    messages only when the list has changed since (another instance's turn, a person's message):
    the turns an instance runs one after another on a session read their tail without moving or
    decoding it. Bounded by the stored size it stands for; the least recently used go first."""

    def __init__(self, max_chars: int = TAILS_MAX_CHARS) -> None:
        self.max_chars = max_chars
        # (tenant, session) -> (revision, limit, messages, their JSON's sizes)
        self._held: OrderedDict[tuple[str, str], tuple[str, int, list[Message], list[int]]] = OrderedDict()
        self._chars = 0
        self._limit = 0  # of the last read: the tail a new session's first commit leaves

    def known(self, key: tuple[str, str], limit: int) -> tuple[str, list[Message]]:
        """The revision held for the session's last ``limit`` messages ('' none) and those messages
        (taken now: other sessions' tails may push this one out while its read is in flight)."""
        self._limit = limit
        held = self._held.get(key)
        if held is None or held[1] != limit:
            return "", []
        self._held.move_to_end(key)
        return held[0], held[2]

    def put(self, key: tuple[str, str], revision: str, limit: int, messages: list[Message],
            sizes: list[int]) -> None:
        self.drop(key)
        if not revision:
            return
        self._held[key] = (revision, limit, messages, sizes)
        self._chars += sum(sizes)
        while self._chars > self.max_chars:
            self._chars -= sum(self._held.popitem(last=False)[1][3])

    def extend(self, key: tuple[str, str], previous: str, revision: str, turn: list[Message], sizes: list[int],
               length: int) -> None:
        """A commit appended ``turn`` to the list at ``previous``, leaving ``length`` messages. The
        held tail stays exact when it was the tail at ``previous``, or when the list is this turn."""
        held = self._held.get(key)
        if held is not None and previous and held[0] == previous:
            limit = held[1]
            keep = min(limit, length)
            self.put(key, revision, limit, (held[2] + turn)[-keep:], (held[3] + sizes)[-keep:])
        elif length == len(turn) and self._limit:  # the list is this turn (a new or restarted session)
            limit = held[1] if held is not None else self._limit
            self.put(key, revision, limit, turn[-limit:], sizes[-limit:])
        else:
            self.drop(key)

    def drop(self, key: tuple[str, str]) -> None:
        held = self._held.pop(key, None)
        if held is not None:
            self._chars -= sum(held[3])

    def __len__(self) -> int:
        return len(self._held)


class WriteMarks:
    """Whether a session may have been written since a read of it began, without asking the store.

    Writes to a session bump its bucket's count as they start and again as they end; drops of
    sessions (deletes, expiry, evictions: their keys are known only inside their transaction)
    bump one count as the first starts and again as their transaction ends. A reader takes
    :meth:`mark` before it reads; :meth:`unchanged` with that mark then says that no write to the
    session started since, nor was in flight when the read began (its end would have bumped it).
    Buckets are shared by keys: another session's write can only make a read look stale (it is
    then done again), never the other way round. This instance's writes only: other instances'
    are the revision check's concern."""

    BUCKETS = 4096

    def __init__(self) -> None:
        self._marks = [0] * self.BUCKETS
        self._drops = 0

    def mark(self, key: tuple[str, str]) -> tuple[int, int]:
        return self._marks[hash(key) % self.BUCKETS], self._drops

    def unchanged(self, key: tuple[str, str], mark: tuple[int, int]) -> bool:
        return self.mark(key) == mark

    @contextmanager
    def writing(self, key: tuple[str, str]) -> Iterator[None]:
        bucket = hash(key) % self.BUCKETS
        self._marks[bucket] += 1
        try:
            yield
        finally:
            self._marks[bucket] += 1

    def dropped(self) -> None:
        """Sessions are being dropped (called as the drop starts, inside its transaction)."""
        self._drops += 1

    @contextmanager
    def dropping(self) -> Iterator[None]:
        """Around a transaction that may drop sessions: bumped again at its end if it did."""
        before = self._drops
        try:
            yield
        finally:
            if self._drops != before:
                self._drops += 1
