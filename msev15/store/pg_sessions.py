"""The ``postgres`` session store (``SESSION_STORE=postgres``): conversations in PostgreSQL,
shared by every instance on DATABASE_URL.

Same behaviour as the memory store (:class:`~msev15.store.sessions.SessionStore` is the reference)
and the same layout as the SQLite store (schema in :mod:`msev15.store.pg_schema`):

- **One transaction per turn.** :meth:`PostgresSessions.commit_turn` appends the whole turn
  atomically and returns once it is committed; the runner emits ``done`` after that. On a live
  session within its caps the append is one statement (the session row updated and every message
  inserted through ``unnest``): one round trip, atomic on its own. A new or expired session, or a
  turn that crosses a cap, takes one transaction (BEGIN … COMMIT) with the trimming and evictions.
  A commit that fails part-way leaves nothing.
- **Bounded, per tenant, in the turn's transaction**, from counters kept in step with the tables
  (``session_meta``, ``session_tenants``, ``sessions.bytes``), as the SQLite store does. Commits on
  one session serialize on its row (``FOR UPDATE``); a deadlock between evictions is retried.
- **Context tails held** between turns (:class:`~msev15.store.tails.HeldTails`): a context read
  sends the tail's revision (``touched``, unique per commit), and the messages come back only when
  the session changed since; an append returns the revision before it (``prev_touched``), so the
  instance that made it extends its tail without reading it again.
- **Fenced** with ``REDIS_URL``: a turn coordinated through Redis commits only while it still
  heads its session's queue (checked just before the commit: :mod:`msev15.store.redis_fence`).
- **Unavailable, not broken**: connection failures raise
  :class:`~msev15.store.base.StoreUnavailable` (see :mod:`msev15.store.pg_kit`).
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import asyncpg

from msev15.store.base import FENCE, FencedOut, StoreStatus, StoreUnavailable
from msev15.store.pg_kit import Conn, Database, translated
from msev15.store.pg_session_sql import APPEND, APPEND_WITHIN, CONTEXT, INSERT, SESSION, SET_MODE
from msev15.store.sessions import Message, Page, Session, check_mode, message_bytes, turn_messages
from msev15.store.tails import HeldTails, WriteMarks

EXPIRE_BATCH = 500
RETRIES = 3

class Fence(Protocol):
    async def holds(self, tenant_id: str, session_id: str, token: str) -> bool: ...

    async def close(self) -> None: ...


Rows = tuple[list[str], list[str | None], list[float], list[str | None], list[int], list[bool]]
TailRead = tuple[str, list[Message], list[Any]]  # the revision held, its tail, the rows read (CONTEXT's columns)


class PostgresSessions:
    kind = "postgres"

    def __init__(self, db: Database, ttl_seconds: float, clock: Callable[[], float], max_messages: int,
                 max_sessions: int, max_sessions_per_tenant: int = 0, max_bytes: int = 0,
                 fence: Fence | None = None) -> None:
        self.db = db
        self.fence = fence  # with REDIS_URL: does a turn still hold its session (store/redis_fence.py)
        self.ttl = ttl_seconds if ttl_seconds > 0 else math.inf  # 0: sessions never expire
        self.max_messages = max_messages
        self.max_sessions = max_sessions
        self.max_sessions_per_tenant = max_sessions_per_tenant or max_sessions
        self.max_bytes = max_bytes  # 0: no byte budget
        self._clock = clock
        self.evicted = 0  # sessions this instance dropped by a session cap
        self._held = 0  # the 'sessions' counter as last read or written (metrics: no I/O)
        self._gone: list[tuple[str, str]] = []  # expired by this instance's sweeps, until gone() takes them
        self.tails = HeldTails()  # each session's context tail as this instance last read or wrote it
        self.marks = WriteMarks()  # whether this instance wrote a session since a read of it began

    @classmethod
    async def open(cls, db: Database, *, ttl_seconds: float, clock: Callable[[], float] = time.time,
                   max_messages: int = 1000, max_sessions: int = 250_000, max_sessions_per_tenant: int = 0,
                   max_bytes: int = 0, fence: Fence | None = None) -> PostgresSessions:
        store = cls(db, ttl_seconds, clock, max_messages, max_sessions, max_sessions_per_tenant, max_bytes, fence)
        if db.migrated:  # else PostgreSQL is down at start-up: counted on the next count()
            await store.count()
        return store

    # --- the Sessions interface -----------------------------------------------------------------

    @translated
    async def get(self, tenant_id: str, session_id: str) -> Session | None:
        async with self.db.transaction() as conn:
            row = await self._live(conn, tenant_id, session_id)
            if row is None:
                return None
            rows = await conn.fetch("SELECT role, content, ts, extra FROM messages WHERE tenant = $1 "
                                    "AND session_id = $2 ORDER BY seq", tenant_id, session_id)
        session = Session(session_id, row[0], row[6])
        session.last_activity, session.visible_count = row[1], row[2]
        session.messages = [_message(r) for r in rows]
        return session

    @translated
    async def context(self, tenant_id: str, session_id: str, limit: int) -> list[dict[str, Any]]:
        """One statement (every turn asks it first): the live session's last ``limit`` messages,
        sent only when the tail this instance holds is not current (store/tails.py)."""
        async with self.db.connection() as conn:
            return self.tail_of(tenant_id, session_id, limit, await self.read_tail(conn, tenant_id, session_id, limit))

    async def read_tail(self, conn: Conn, tenant_id: str, session_id: str, limit: int) -> TailRead:
        """The context statement's answer for a held revision (see :meth:`tail_of`)."""
        revision, held = self.tails.known((tenant_id, session_id), limit)
        rows = await conn.fetch(CONTEXT, tenant_id, session_id, limit, self.cutoff(), int(revision or 0))
        return revision, held, rows

    def tail_of(self, tenant_id: str, session_id: str, limit: int, read: TailRead) -> list[dict[str, Any]]:
        """The context (model messages) from a context statement's answer: the held tail when it
        was current, else the rows sent (then held in its place); nothing for a session gone."""
        revision, held, rows = read
        key = (tenant_id, session_id)
        if not rows:
            self.tails.drop(key)
            return []
        current = str(rows[0][0])
        if rows[0][1] is None and current == revision:  # the tail held here is current
            tail = held
        else:
            tail = [_message(r[1:5]) for r in reversed(rows) if r[1] is not None]
            self.tails.put(key, current, limit, tail, [int(r[5]) for r in reversed(rows) if r[1] is not None])
        # A tool result must follow its call: skip results cut off from their assistant message.
        start = next((i for i, m in enumerate(tail) if m.role != "tool"), len(tail))
        return [m.to_model() for m in tail[start:]]

    async def commit_turn(self, tenant_id: str, session_id: str, user_text: str, started_at: float,
                          steps: Iterable[dict[str, Any]], answer: str) -> int:
        steps = list(steps)
        return await self._commit(tenant_id, session_id,
                                  lambda now: turn_messages(user_text, started_at, steps, answer, now), started_at)

    async def commit_messages(self, tenant_id: str, session_id: str, messages: list[Message],
                              started_at: float) -> int:
        return await self._commit(tenant_id, session_id, lambda now: messages, started_at)

    @translated
    async def _commit(self, tenant_id: str, session_id: str, build: Callable[[float], list[Message]],
                      started_at: float) -> int:
        with self.marks.writing((tenant_id, session_id)):
            return await self._commit_marked(tenant_id, session_id, build, started_at)

    async def _commit_marked(self, tenant_id: str, session_id: str, build: Callable[[float], list[Message]],
                             started_at: float) -> int:
        now = self._clock()
        turn = build(now)
        rows = _rows(turn)  # before anything is written: a malformed step changes nothing
        token = FENCE.get()
        if token is not None and self.fence is not None and not await self.fence.holds(tenant_id, session_id, token):
            raise FencedOut("this turn no longer holds its session")
        key = (tenant_id, session_id)
        try:
            async with self.db.connection() as conn:
                found = await conn.fetchrow(APPEND_WITHIN, tenant_id, session_id, now, sum(rows[5]), len(turn),
                                            sum(rows[4]), self._cutoff_at(now), *rows, self.max_messages,
                                            self.max_bytes)
        except BaseException:
            self.tails.drop(key)  # it may or may not have been written
            raise
        assert found is not None  # the statement returns one row either way
        if found[0] is not None:
            start, first, visible = int(found[0]), int(found[1]), int(found[2])
            self.tails.extend(key, str(found[5] or ""), str(found[6]), turn, rows[4], start + len(turn) - first)
            return visible
        fresh = not found[4]  # no such session: no append to try, nothing expired to drop
        for attempt in range(RETRIES):
            try:
                with self.marks.dropping():  # a new session may evict others, a restarted one drops itself
                    async with self.db.transaction() as conn:
                        appended = await self._append(conn, tenant_id, session_id, build, started_at, fresh)
            except (asyncpg.DeadlockDetectedError, asyncpg.UniqueViolationError):
                # two instances created the session at once, or two evictions crossed: again, afresh
                if attempt == RETRIES - 1:
                    self.tails.drop(key)
                    raise
                fresh = False
            except BaseException:
                self.tails.drop(key)
                raise
            else:
                visible, previous, revision, messages, sizes, length = appended
                self.tails.extend(key, previous, revision, messages, sizes, length)
                return visible
        raise AssertionError("unreachable")

    async def _append(self, conn: Conn, tenant_id: str, session_id: str,
                      build: Callable[[float], list[Message]], started_at: float,
                      fresh: bool) -> tuple[int, str, str, list[Message], list[int], int]:
        """The whole commit in the caller's transaction; ``fresh``: the session did not exist a
        moment ago (if another instance creates it meanwhile, the insert fails and the caller
        retries with ``fresh`` False). Its visible count, then for the held tails the revisions
        before and after, the messages and their sizes, and the messages the session holds now."""
        now = self._clock()
        turn = build(now)
        rows = _rows(turn)  # before anything is written: a malformed step changes nothing
        shown, added, n = sum(rows[5]), sum(rows[4]), len(turn)
        found = None
        if not fresh:
            found = await conn.fetchrow(APPEND, tenant_id, session_id, now, shown, n, added, self._cutoff_at(now),
                                        *rows)
        key = (tenant_id, session_id)
        if found is None:  # a new session, or one that expired: it starts afresh
            if not fresh:
                await self._drop(conn, [key])
            counts = await conn.fetchrow(INSERT, tenant_id, session_id, started_at, now, shown, n, added, *rows)
            assert counts is not None  # the statement always returns its one row
            self._held = int(counts[0])
            await self._admit(conn, tenant_id, session_id, int(counts[1]))
            first, end, visible, size = 0, n, shown, added
            previous, revision = "", str(counts[2])
        else:
            start, first, visible, size = found[:4]
            end = start + n
            previous, revision = str(found[4] or ""), str(found[5])
        if end - first > self.max_messages:
            first, visible, size = await self._cut(conn, key, await self._turn_start(conn, key, end), visible, size)
        if self.max_bytes and size > self.max_bytes:
            cut = await self._bytes_cut(conn, key, size - self.max_bytes)
            if cut is not None:
                first, visible, size = await self._cut(conn, key, cut, visible, size)
        return int(visible), previous, revision, turn, rows[4], end - first

    @translated
    async def mode(self, tenant_id: str, session_id: str) -> str | None:
        async with self.db.connection() as conn:
            row = await self._live(conn, tenant_id, session_id)
        return None if row is None else str(row[6])

    @translated
    async def set_mode(self, tenant_id: str, session_id: str, mode: str, expect: str | None = None) -> bool:
        check_mode(mode)
        guard = "" if expect is None else " AND mode = $5"
        args: list[Any] = [mode, tenant_id, session_id, self.cutoff()]
        if expect is not None:
            args.append(expect)
        async with self.db.connection() as conn:
            found = await conn.fetchval(SET_MODE.format(guard=guard), *args)
        return found is not None

    @translated
    async def page(self, tenant_id: str, limit: int, offset: int) -> Page:
        """Newest activity first; walks the (tenant, last_activity, touched) index from the nearer end."""
        columns = "session_id, created_at, last_activity, visible_count, mode"
        live = "tenant = $1 AND last_activity > $2"
        cutoff = self.cutoff()
        async with self.db.transaction() as conn:
            total = int(await conn.fetchval(f"SELECT COUNT(*) FROM sessions WHERE {live}", tenant_id, cutoff))
            if offset >= total:
                return Page(total, [])
            if offset * 2 <= total:
                rows = list(await conn.fetch(
                    f"SELECT {columns} FROM sessions WHERE {live} ORDER BY last_activity DESC, touched DESC "
                    "LIMIT $3 OFFSET $4", tenant_id, cutoff, limit, offset))
            else:
                stop = total - offset
                begin = max(0, stop - limit)
                rows = list(await conn.fetch(
                    f"SELECT {columns} FROM sessions WHERE {live} ORDER BY last_activity, touched "
                    "LIMIT $3 OFFSET $4", tenant_id, cutoff, stop - begin, begin))
                rows.reverse()
        sessions = []
        for sid, created_at, last_activity, visible_count, mode in rows:
            session = Session(sid, created_at, mode)
            session.last_activity, session.visible_count = last_activity, visible_count
            sessions.append(session)
        return Page(total, sessions)

    @translated
    async def delete(self, tenant_id: str, session_id: str) -> int | None:
        with self.marks.dropping():
            async with self.db.transaction() as conn:
                row = await self._live(conn, tenant_id, session_id, lock=True)
                if row is None:
                    return None
                await self._drop(conn, [(tenant_id, session_id)])
        return int(row[2])

    @translated
    async def expire(self) -> int:
        """Drop sessions idle for longer than the TTL, in batches (one short transaction each)."""
        if self.ttl == math.inf:
            await self.count()
            return 0
        dropped = 0
        while True:
            with self.marks.dropping():
                async with self.db.transaction() as conn:
                    victims = [(str(t), str(s)) for t, s in await conn.fetch(
                        "SELECT tenant, session_id FROM sessions WHERE last_activity <= $1 "
                        "ORDER BY last_activity, touched LIMIT $2 FOR UPDATE SKIP LOCKED", self.cutoff(),
                        EXPIRE_BATCH)]
                    await self._drop(conn, victims)
            self._gone.extend(victims)  # committed (rows locked: no other instance reports them)
            dropped += len(victims)
            if len(victims) < EXPIRE_BATCH:
                await self.count()
                return dropped

    async def gone(self) -> list[tuple[str, str]]:
        gone, self._gone = self._gone, []
        return gone

    @translated
    async def count(self) -> int:
        async with self.db.connection() as conn:
            self._held = int(await conn.fetchval("SELECT value FROM session_meta WHERE name = 'sessions'"))
        return self._held

    def held(self) -> int:
        return self._held

    async def status(self) -> StoreStatus:
        return await self.db.status()

    async def close(self) -> None:
        """The pool is the topology's: it closes it; the fence's client is the store's."""
        if self.fence is not None:
            await self.fence.close()

    # --- internals --------------------------------------------------------------------------------

    def cutoff(self) -> float:
        """Sessions whose last activity is at or before this are gone (past their TTL)."""
        return self._cutoff_at(self._clock())

    def _cutoff_at(self, now: float) -> float:
        return now - self.ttl if self.ttl != math.inf else -math.inf

    async def _live(self, conn: Conn, tenant_id: str, session_id: str,
                    lock: bool = False) -> asyncpg.Record | None:
        row = await conn.fetchrow(SESSION + (" FOR UPDATE" if lock else ""), tenant_id, session_id)
        if row is None or row[1] + self.ttl <= self._clock():
            return None  # an expired session is gone for readers; the sweeper deletes it
        return row

    async def _drop(self, conn: Conn, keys: list[tuple[str, str]]) -> None:
        if not keys:
            return
        self.marks.dropped()
        for key in keys:  # whether or not this transaction commits, nothing held is needed for them
            self.tails.drop(key)
        tenants, sids = [k[0] for k in keys], [k[1] for k in keys]
        gone = await conn.fetch(
            "DELETE FROM sessions s USING unnest($1::text[], $2::text[]) AS k(tenant, session_id) "
            "WHERE s.tenant = k.tenant AND s.session_id = k.session_id RETURNING s.tenant, s.session_id",
            tenants, sids)
        if not gone:
            return
        tenants, sids = [r[0] for r in gone], [r[1] for r in gone]
        await conn.execute(
            "DELETE FROM messages m USING unnest($1::text[], $2::text[]) AS k(tenant, session_id) "
            "WHERE m.tenant = k.tenant AND m.session_id = k.session_id", tenants, sids)
        self._held = int(await conn.fetchval(
            "UPDATE session_meta SET value = value - $1 WHERE name = 'sessions' RETURNING value", len(gone)))
        per_tenant = Counter(tenants)
        await conn.executemany(
            "UPDATE session_tenants SET sessions = sessions - $1, changed = nextval('session_touched') "
            "WHERE tenant = $2", [(n, t) for t, n in per_tenant.items()])
        await conn.execute("DELETE FROM session_tenants WHERE tenant = ANY($1::text[]) AND sessions <= 0",
                           list(per_tenant))

    async def _admit(self, conn: Conn, tenant_id: str, session_id: str, count: int) -> None:
        """A new session was inserted and counted (``count``: the tenant's sessions now): apply the
        session caps (the tenant's own least recently active go first; over SESSION_MAX_SESSIONS
        the tenant holding the most loses its least recently active). The new session is never
        the one to go."""
        excess = count - self.max_sessions_per_tenant
        if excess > 0:
            await self._evict(conn, tenant_id, session_id, excess)
        while self._held > self.max_sessions:
            largest = await conn.fetchval("SELECT tenant FROM session_tenants ORDER BY sessions DESC, changed LIMIT 1")
            if largest is None or not await self._evict(conn, str(largest),
                                                        session_id if largest == tenant_id else None, 1):
                break

    async def _evict(self, conn: Conn, tenant_id: str, spare: str | None, n: int) -> int:
        victims = [(tenant_id, str(s)) for (s,) in await conn.fetch(
            "SELECT session_id FROM sessions WHERE tenant = $1 AND session_id IS DISTINCT FROM $2 "
            "ORDER BY last_activity, touched LIMIT $3", tenant_id, spare, n)]
        await self._drop(conn, victims)
        self.evicted += len(victims)
        return len(victims)

    async def _turn_start(self, conn: Conn, key: tuple[str, str], end: int) -> int:
        excess_at = end - self.max_messages
        cut = await conn.fetchval("SELECT MIN(seq) FROM messages WHERE tenant = $1 AND session_id = $2 "
                                  "AND seq >= $3 AND role = 'user'", *key, excess_at)
        return excess_at if cut is None else int(cut)

    async def _bytes_cut(self, conn: Conn, key: tuple[str, str], over: int) -> int | None:
        freed, cut, head = 0, None, True
        for seq, role, size in await conn.fetch("SELECT seq, role, bytes FROM messages WHERE tenant = $1 "
                                                "AND session_id = $2 ORDER BY seq", *key):
            if role == "user" and not head:
                cut = int(seq)
                if freed >= over:
                    break
            freed += int(size)
            head = False
        return cut

    async def _cut(self, conn: Conn, key: tuple[str, str], cut: int, visible: int,
                   size: int) -> tuple[int, int, int]:
        counted = await conn.fetchrow(
            "WITH d AS (DELETE FROM messages WHERE tenant = $1 AND session_id = $2 AND seq < $3 "
            "RETURNING visible, bytes) SELECT COALESCE(SUM(visible::int), 0), COALESCE(SUM(bytes), 0) FROM d",
            *key, cut)
        assert counted is not None  # an aggregate always has its row
        visible, size = visible - int(counted[0]), size - int(counted[1])
        await conn.execute("UPDATE sessions SET first_seq = $1, visible_count = $2, bytes = $3 "
                           "WHERE tenant = $4 AND session_id = $5", cut, visible, size, *key)
        return cut, visible, size


def _rows(turn: list[Message]) -> Rows:
    """The messages as columns for ``unnest`` (role, content, ts, extra as JSON, bytes, visible)."""
    return ([m.role for m in turn], [m.content for m in turn], [float(m.ts) for m in turn],
            [None if m.extra is None else json.dumps(m.extra) for m in turn],
            [message_bytes(m) for m in turn], [m.visible for m in turn])


def _message(row: asyncpg.Record | tuple[Any, ...]) -> Message:
    role, content, ts, extra = row
    return Message(role, content, ts, None if extra is None else json.loads(extra))


__all__ = ["PostgresSessions", "StoreUnavailable"]
