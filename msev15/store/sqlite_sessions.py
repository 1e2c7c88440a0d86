"""The ``sqlite`` session store: conversations that survive a restart, on one machine.

Same behaviour as the memory store (:class:`~msev15.store.sessions.SessionStore` is the reference)
with the same snapshots (:class:`Session`, :class:`Message`, :class:`Page`); the schema is in
:mod:`msev15.store.session_schema`.

- **Durable turns.** :meth:`SqliteSessions.commit_turn` writes the whole turn in one
  ``BEGIN IMMEDIATE ... COMMIT`` (WAL, ``synchronous=FULL``) and returns only once it is on disk;
  the runner emits ``done`` after that. A commit that fails part-way leaves nothing.
- **One connection, one lock.** Every call takes the lock, so no reader on the shared connection
  ever sees a transaction in progress. One instance per database file: the process that owns it
  is the only writer (another process would only wait for the lock, up to ``BUSY_TIMEOUT_MS``).
- **Bounded, per tenant, in the turn's transaction.** ``max_messages`` per session and
  ``max_bytes`` of message text per session (the oldest whole turns go; the newest turn always
  stays), ``max_sessions_per_tenant`` (the tenant's own least recently active go) and
  ``max_sessions`` in all (the tenant holding the most sessions loses its least recently active,
  never a quieter tenant), and the TTL (0: never). All of it happens inside the commit's one
  transaction, from counters kept in step with the tables (meta 'sessions', the ``tenants``
  table, ``sessions.bytes``), never a COUNT(*); lists walk the ``(tenant, last_activity,
  touched)`` index from its nearer end, never the table.
- **Unavailable, not broken.** SQLite errors that mean the file cannot be used now (disk full,
  read-only, I/O error, locked beyond the timeout) raise :class:`StoreUnavailable`; ``status()``
  says ``unavailable`` until a write succeeds again (it retries a small write itself, at most
  every ``PROBE_SECONDS``).
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from msev15.store.base import StoreStatus, StoreUnavailable
from msev15.store.session_schema import SessionDatabaseError, configure, migrate
from msev15.store.sessions import Message, Page, Session, check_mode, message_bytes, turn_messages
from msev15.store.sqlite_kit import AsyncSqlite

log = logging.getLogger("store.sessions")

PROBE_SECONDS = 5.0
EXPIRE_BATCH = 500
# Result codes (the primary code, low byte) that mean "the store cannot be used right now".
_UNAVAILABLE_CODES = frozenset({
    sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_IOERR,
    sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_FULL, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PROTOCOL,
    sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_PERM,
})
_SESSION = ("SELECT created_at, last_activity, visible_count, first_seq, next_seq, bytes, mode FROM sessions "
            "WHERE tenant = ? AND session_id = ?")
# An assistant message is visible unless it carries tool calls: a person's message has an author.
_VISIBLE = "(role = 'user' OR (role = 'assistant' AND (extra IS NULL OR json_type(extra, '$.author') IS NOT NULL)))"
_CHANGED = "(SELECT value FROM meta WHERE name = 'touched')"


def _unavailable(exc: BaseException) -> bool:
    if isinstance(exc, sqlite3.Error):
        return (getattr(exc, "sqlite_errorcode", -1) & 0xFF) in _UNAVAILABLE_CODES
    return isinstance(exc, ValueError) and str(exc) in ("Connection closed", "no active connection")


class SqliteSessions:
    kind = "sqlite"

    def __init__(self, sqlite: AsyncSqlite, ttl_seconds: float, clock: Callable[[], float],
                 max_messages: int, max_sessions: int, max_sessions_per_tenant: int = 0, max_bytes: int = 0) -> None:
        self._sqlite = sqlite
        self.path = sqlite.path
        self.ttl = ttl_seconds if ttl_seconds > 0 else math.inf  # 0: sessions never expire
        self.max_messages = max_messages
        self.max_sessions = max_sessions
        self.max_sessions_per_tenant = max_sessions_per_tenant or max_sessions
        self.max_bytes = max_bytes  # 0: no byte budget
        self._clock = clock
        self._healthy = True
        self._probed_at = -PROBE_SECONDS
        self.evicted = 0  # sessions this instance dropped by a session cap
        self._held = 0  # the 'sessions' counter as last read or written (for metrics: no I/O)
        self._gone: list[tuple[str, str]] = []  # expired by this instance's sweeps, until gone() takes them

    @classmethod
    async def open(cls, path: str | Path, *, ttl_seconds: float, clock: Callable[[], float] = time.time,
                   max_messages: int = 1000, max_sessions: int = 250_000, max_sessions_per_tenant: int = 0,
                   max_bytes: int = 0) -> SqliteSessions:
        """Create the folder, connect, configure and migrate. Raises :class:`SessionDatabaseError`."""
        held = 0

        async def setup(db: aiosqlite.Connection, db_path: Path) -> None:
            nonlocal held
            try:
                await configure(db, db_path)
                await migrate(db, db_path)
                held = int(next(iter(await db.execute_fetchall("SELECT value FROM meta WHERE name = 'sessions'")))[0])
            except sqlite3.Error as exc:
                raise SessionDatabaseError(f"cannot use {db_path} as the session database: {exc}") from exc

        try:
            sqlite = await AsyncSqlite.open(path, setup, "the session database")
        except (OSError, sqlite3.Error) as exc:
            raise SessionDatabaseError(f"cannot open the session database {Path(path).expanduser()}: {exc}") from exc
        store = cls(sqlite, ttl_seconds, clock, max_messages, max_sessions, max_sessions_per_tenant, max_bytes)
        store._held = held
        return store

    # --- the Sessions interface -----------------------------------------------------------------

    async def get(self, tenant_id: str, session_id: str) -> Session | None:
        async with self._reading() as db:
            row = await self._live(db, tenant_id, session_id)
            if row is None:
                return None
            rows = await db.execute_fetchall(
                "SELECT role, content, ts, extra FROM messages WHERE tenant = ? AND session_id = ? ORDER BY seq",
                (tenant_id, session_id))
        session = Session(session_id, row[0], row[6])
        session.last_activity, session.visible_count = row[1], row[2]
        session.messages = [_message(r) for r in rows]
        return session

    async def context(self, tenant_id: str, session_id: str, limit: int) -> list[dict[str, Any]]:
        async with self._reading() as db:
            if await self._live(db, tenant_id, session_id) is None:
                return []
            rows = list(await db.execute_fetchall(
                "SELECT role, content, ts, extra FROM messages WHERE tenant = ? AND session_id = ? "
                "ORDER BY seq DESC LIMIT ?", (tenant_id, session_id, limit)))
        rows.reverse()
        # A tool result must follow its call: skip results cut off from their assistant message.
        start = next((i for i, r in enumerate(rows) if r[0] != "tool"), len(rows))
        return [_message(r).to_model() for r in rows[start:]]

    async def commit_turn(self, tenant_id: str, session_id: str, user_text: str, started_at: float,
                          steps: Iterable[dict[str, Any]], answer: str) -> int:
        """Append a whole turn (user message, tool exchange, answer) in one durable transaction."""
        return await self._commit(tenant_id, session_id,
                                  lambda now: turn_messages(user_text, started_at, steps, answer, now), started_at)

    async def commit_messages(self, tenant_id: str, session_id: str, turn: list[Message],
                              started_at: float) -> int:
        """Append what a person wrote, in one durable transaction."""
        return await self._commit(tenant_id, session_id, lambda now: turn, started_at)

    async def _commit(self, tenant_id: str, session_id: str, build: Callable[[float], list[Message]],
                      started_at: float) -> int:
        """Append ``build(now)`` in one durable transaction (``now``: the commit's time, the session's
        last activity)."""
        async with self._writing() as db:
            now = self._clock()
            turn = build(now)
            messages = _rows(turn)  # before anything is written: a malformed step changes nothing
            shown = sum(1 for m in turn if m.visible)
            row = await self._row(db, tenant_id, session_id)
            if row is not None and row[1] + self.ttl <= now:  # expired: the turn starts afresh
                await self._drop(db, [(tenant_id, session_id)])
                row = None
            added = sum(m[-1] for m in messages)
            touched = await self._counter(db, "touched", 1)
            if row is None:
                first, start, visible, size = 0, 0, shown, added
                await db.execute_fetchall(
                    "INSERT INTO sessions (tenant, session_id, created_at, last_activity, touched, visible_count, "
                    "first_seq, next_seq, bytes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (tenant_id, session_id, started_at, now, touched, visible, first, len(messages), size))
                await self._counter(db, "sessions", 1)
                await self._admit(db, tenant_id, session_id)
            else:
                first, start, visible, size = row[3], row[4], row[2] + shown, row[5] + added
                await db.execute_fetchall(
                    "UPDATE sessions SET last_activity = ?, touched = ?, visible_count = ?, next_seq = ?, bytes = ? "
                    "WHERE tenant = ? AND session_id = ?",
                    (now, touched, visible, start + len(messages), size, tenant_id, session_id))
            await _run_many(db, "INSERT INTO messages (tenant, session_id, seq, role, content, ts, extra, bytes) "
                            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                            [(tenant_id, session_id, start + i, *m) for i, m in enumerate(messages)])
            end = start + len(messages)
            key = (tenant_id, session_id)
            if end - first > self.max_messages:
                first, visible, size = await self._cut(db, key, await self._turn_start(db, key, end), visible, size)
            if self.max_bytes and size > self.max_bytes:
                cut = await self._bytes_cut(db, key, size - self.max_bytes)
                if cut is not None:
                    first, visible, size = await self._cut(db, key, cut, visible, size)
        return visible

    async def mode(self, tenant_id: str, session_id: str) -> str | None:
        async with self._reading() as db:
            row = await self._live(db, tenant_id, session_id)
        return None if row is None else str(row[6])

    async def set_mode(self, tenant_id: str, session_id: str, mode: str, expect: str | None = None) -> bool:
        check_mode(mode)
        live, params = self._live_clause(tenant_id)
        guard, more = ("", ()) if expect is None else (" AND mode = ?", (expect,))
        async with self._writing() as db:
            rows = await db.execute_fetchall(
                f"UPDATE sessions SET mode = ? WHERE {live} AND session_id = ?{guard} RETURNING session_id",
                (mode, *params, session_id, *more))
        return bool(list(rows))

    async def page(self, tenant_id: str, limit: int, offset: int) -> Page:
        """Newest activity first; reads O(min(offset, total - offset) + limit) index entries."""
        live, params = self._live_clause(tenant_id)
        columns = "session_id, created_at, last_activity, visible_count, mode"
        async with self._reading() as db:
            counted = await db.execute_fetchall(f"SELECT COUNT(*) FROM sessions WHERE {live}", params)
            total = int(next(iter(counted))[0])
            if offset >= total:
                return Page(total, [])
            if offset * 2 <= total:  # walk the index from whichever end is nearer
                rows = list(await db.execute_fetchall(
                    f"SELECT {columns} FROM sessions WHERE {live} ORDER BY last_activity DESC, touched DESC "
                    "LIMIT ? OFFSET ?", (*params, limit, offset)))
            else:
                stop = total - offset
                begin = max(0, stop - limit)
                rows = list(await db.execute_fetchall(
                    f"SELECT {columns} FROM sessions WHERE {live} ORDER BY last_activity, touched "
                    "LIMIT ? OFFSET ?", (*params, stop - begin, begin)))
                rows.reverse()
        sessions = []
        for sid, created_at, last_activity, visible_count, mode in rows:
            session = Session(sid, created_at, mode)
            session.last_activity, session.visible_count = last_activity, visible_count
            sessions.append(session)
        return Page(total, sessions)

    async def delete(self, tenant_id: str, session_id: str) -> int | None:
        async with self._writing() as db:
            row = await self._live(db, tenant_id, session_id)
            if row is None:
                return None
            await self._drop(db, [(tenant_id, session_id)])
        return int(row[2])

    async def expire(self) -> int:
        """Drop sessions idle for longer than the TTL, in batches (one short transaction each)."""
        if self.ttl == math.inf:
            await self.count()  # refreshes held() with what other writers did
            return 0
        dropped = 0
        while True:
            async with self._writing() as db:
                victims = [(str(t), str(s)) for t, s in await db.execute_fetchall(
                    "SELECT tenant, session_id FROM sessions WHERE last_activity <= ? "
                    "ORDER BY last_activity, touched LIMIT ?", (self._clock() - self.ttl, EXPIRE_BATCH))]
                await self._drop(db, victims)
            self._gone.extend(victims)  # committed: the sweeper drops what hangs on them
            dropped += len(victims)
            if len(victims) < EXPIRE_BATCH:
                await self.count()  # refreshes held() with what other writers did
                return dropped

    async def gone(self) -> list[tuple[str, str]]:
        gone, self._gone = self._gone, []
        return gone

    async def count(self) -> int:
        async with self._reading() as db:
            return await self._counter(db, "sessions", 0)

    def held(self) -> int:
        """Sessions held, as this instance last read or wrote the counter: no I/O (for metrics).
        Exact while this instance is the only writer; ``expire()`` (the sweeper) refreshes it."""
        return self._held

    async def status(self) -> StoreStatus:
        if self._sqlite.closed:
            return "unavailable"
        if not self._healthy and not self._sqlite.lock.locked() and time.monotonic() - self._probed_at >= PROBE_SECONDS:
            self._probed_at = time.monotonic()
            try:  # a small real write (one page, committed): does the file take writes again?
                async with self._writing() as db:
                    await db.execute_fetchall("UPDATE meta SET value = value WHERE name = 'touched'")
            except StoreUnavailable:
                pass
        return "healthy" if self._healthy else "unavailable"

    async def close(self) -> None:
        """Close the connection; safe to call twice. Later calls raise StoreUnavailable."""
        await self._sqlite.close()

    # --- internals --------------------------------------------------------------------------------

    @asynccontextmanager
    async def _reading(self) -> AsyncIterator[aiosqlite.Connection]:
        try:
            async with self._sqlite.reading() as db:
                yield db
        except Exception as exc:
            raise self._failed(exc) from exc

    @asynccontextmanager
    async def _writing(self) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction; anything raised inside (a cancellation too) rolls it back."""
        try:
            async with self._sqlite.writing() as db:
                yield db
        except Exception as exc:
            raise self._failed(exc) from exc
        self._healthy = True

    def _failed(self, exc: Exception) -> Exception:
        if not isinstance(exc, StoreUnavailable) and not _unavailable(exc):
            return exc
        self._healthy = False
        self._probed_at = time.monotonic()  # readiness holds "unavailable" a while before probing
        if isinstance(exc, StoreUnavailable):
            return exc
        log.warning("session database %s unavailable: %s", self.path, exc)
        return StoreUnavailable(f"the session database cannot be used: {exc}")

    async def _row(self, db: aiosqlite.Connection, tenant_id: str, session_id: str) -> Sequence[Any] | None:
        rows = await db.execute_fetchall(_SESSION, (tenant_id, session_id))
        return next(iter(rows), None)

    async def _live(self, db: aiosqlite.Connection, tenant_id: str, session_id: str) -> Sequence[Any] | None:
        row = await self._row(db, tenant_id, session_id)
        if row is None or row[1] + self.ttl <= self._clock():
            return None  # an expired session is gone for readers; the sweeper deletes it
        return row

    def _live_clause(self, tenant_id: str) -> tuple[str, tuple[Any, ...]]:
        if self.ttl == math.inf:
            return "tenant = ?", (tenant_id,)
        return "tenant = ? AND last_activity > ?", (tenant_id, self._clock() - self.ttl)

    async def _counter(self, db: aiosqlite.Connection, name: str, delta: int) -> int:
        if not delta:
            rows = await db.execute_fetchall("SELECT value FROM meta WHERE name = ?", (name,))
        else:
            rows = await db.execute_fetchall("UPDATE meta SET value = value + ? WHERE name = ? RETURNING value",
                                             (delta, name))
        value = int(next(iter(rows))[0])
        if name == "sessions":
            self._held = value
        return value

    async def _drop(self, db: aiosqlite.Connection, keys: list[tuple[str, str]]) -> None:
        if not keys:
            return
        await _run_many(db, "DELETE FROM messages WHERE tenant = ? AND session_id = ?", keys)
        await _run_many(db, "DELETE FROM sessions WHERE tenant = ? AND session_id = ?", keys)
        await self._counter(db, "sessions", -len(keys))
        per_tenant = Counter(tenant for tenant, _ in keys)
        await _run_many(db, f"UPDATE tenants SET sessions = sessions - ?, changed = {_CHANGED} WHERE tenant = ?",
                        [(n, tenant) for tenant, n in per_tenant.items()])
        await _run_many(db, "DELETE FROM tenants WHERE tenant = ? AND sessions <= 0", [(t,) for t in per_tenant])

    async def _admit(self, db: aiosqlite.Connection, tenant_id: str, session_id: str) -> None:
        """A new session was inserted: count it for its tenant, then apply the session caps. Over
        the tenant's own cap its least recently active go; over SESSION_MAX_SESSIONS the tenant
        holding the most (the first to reach that count, on a tie) loses its least recently
        active. The new session is never the one to go."""
        rows = await db.execute_fetchall(
            f"INSERT INTO tenants (tenant, sessions, changed) VALUES (?, 1, {_CHANGED}) ON CONFLICT (tenant) "
            "DO UPDATE SET sessions = sessions + 1, changed = excluded.changed RETURNING sessions", (tenant_id,))
        excess = int(next(iter(rows))[0]) - self.max_sessions_per_tenant
        if excess > 0:
            await self._evict(db, tenant_id, session_id, excess)
        while self._held > self.max_sessions:
            largest = next(iter(await db.execute_fetchall(
                "SELECT tenant FROM tenants ORDER BY sessions DESC, changed LIMIT 1")))[0]
            if not await self._evict(db, str(largest), session_id if largest == tenant_id else None, 1):
                break

    async def _evict(self, db: aiosqlite.Connection, tenant_id: str, spare: str | None, n: int) -> int:
        """Drop the tenant's ``n`` least recently active sessions, never ``spare``."""
        victims = [(tenant_id, str(s)) for (s,) in await db.execute_fetchall(
            "SELECT session_id FROM sessions WHERE tenant = ? AND session_id IS NOT ? "
            "ORDER BY last_activity, touched LIMIT ?", (tenant_id, spare, n))]
        await self._drop(db, victims)
        self.evicted += len(victims)
        return len(victims)

    async def _turn_start(self, db: aiosqlite.Connection, key: tuple[str, str], end: int) -> int:
        """Where to cut to keep at most max_messages: the first turn start at or after the excess."""
        excess_at = end - self.max_messages
        rows = await db.execute_fetchall(
            "SELECT MIN(seq) FROM messages WHERE tenant = ? AND session_id = ? AND seq >= ? AND role = 'user'",
            (*key, excess_at))
        cut = next(iter(rows))[0]
        return excess_at if cut is None else int(cut)

    async def _bytes_cut(self, db: aiosqlite.Connection, key: tuple[str, str], over: int) -> int | None:
        """Where to cut to free ``over`` bytes: the first turn start with at least that much before it,
        else the newest turn's start (it always stays). None: the session is one turn."""
        freed, cut, head = 0, None, True
        async with db.execute("SELECT seq, role, bytes FROM messages WHERE tenant = ? AND session_id = ? "
                              "ORDER BY seq", key) as cursor:
            async for seq, role, size in cursor:
                if role == "user" and not head:  # a turn starts here (the oldest message starts one too)
                    cut = int(seq)
                    if freed >= over:
                        break
                freed += int(size)
                head = False
        return cut

    async def _cut(self, db: aiosqlite.Connection, key: tuple[str, str], cut: int, visible: int,
                   size: int) -> tuple[int, int, int]:
        """Drop the messages before ``cut``; the session's new (first_seq, visible count, bytes)."""
        removed, freed = next(iter(await db.execute_fetchall(
            f"SELECT COALESCE(SUM({_VISIBLE}), 0), COALESCE(SUM(bytes), 0) FROM messages "
            "WHERE tenant = ? AND session_id = ? AND seq < ?", (*key, cut))))
        await db.execute_fetchall("DELETE FROM messages WHERE tenant = ? AND session_id = ? AND seq < ?",
                                  (*key, cut))
        visible, size = visible - int(removed), size - int(freed)
        await db.execute_fetchall("UPDATE sessions SET first_seq = ?, visible_count = ?, bytes = ? "
                                  "WHERE tenant = ? AND session_id = ?", (cut, visible, size, *key))
        return cut, visible, size


async def _run_many(db: aiosqlite.Connection, sql: str, rows: Iterable[Sequence[Any]]) -> None:
    cursor = await db.executemany(sql, rows)
    await cursor.close()


def _rows(turn: list[Message]) -> list[tuple[str, str | None, float, str | None, int]]:
    """The messages' rows (role, content, ts, extra as JSON, bytes); built before anything is
    written, so a malformed step changes nothing."""
    return [(m.role, m.content, m.ts, None if m.extra is None else json.dumps(m.extra), message_bytes(m))
            for m in turn]


def _message(row: Sequence[Any]) -> Message:
    role, content, ts, extra = row
    return Message(role, content, ts, None if extra is None else json.loads(extra))


__all__ = ["SessionDatabaseError", "SqliteSessions"]
