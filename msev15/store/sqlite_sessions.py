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
- **Bounded.** ``max_messages`` per session (the oldest whole turns go), ``max_sessions`` in all
  (the least recently active go), and the TTL (0: never); lists walk the
  ``(tenant, last_activity, touched)`` index from its nearer end, never the table.
- **Unavailable, not broken.** SQLite errors that mean the file cannot be used now (disk full,
  read-only, I/O error, locked beyond the timeout) raise :class:`StoreUnavailable`; ``status()``
  says ``unavailable`` until a write succeeds again (it retries a small write itself, at most
  every ``PROBE_SECONDS``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from msev15.store.base import StoreStatus, StoreUnavailable
from msev15.store.session_schema import SessionDatabaseError, configure, migrate
from msev15.store.sessions import Message, Page, Session

log = logging.getLogger("store.sessions")

PROBE_SECONDS = 5.0
EXPIRE_BATCH = 500
# Result codes (the primary code, low byte) that mean "the store cannot be used right now".
_UNAVAILABLE_CODES = frozenset({
    sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_IOERR,
    sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_FULL, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PROTOCOL,
    sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_PERM,
})
_SESSION = ("SELECT created_at, last_activity, visible_count, first_seq, next_seq FROM sessions "
            "WHERE tenant = ? AND session_id = ?")
_VISIBLE = "(role = 'user' OR (role = 'assistant' AND extra IS NULL))"


def _unavailable(exc: BaseException) -> bool:
    if isinstance(exc, sqlite3.Error):
        return (getattr(exc, "sqlite_errorcode", -1) & 0xFF) in _UNAVAILABLE_CODES
    return isinstance(exc, ValueError) and str(exc) in ("Connection closed", "no active connection")


class SqliteSessions:
    kind = "sqlite"

    def __init__(self, db: aiosqlite.Connection, path: Path, ttl_seconds: float, clock: Callable[[], float],
                 max_messages: int, max_sessions: int) -> None:
        self._db: aiosqlite.Connection | None = db
        self.path = path
        self.ttl = ttl_seconds if ttl_seconds > 0 else math.inf  # 0: sessions never expire
        self.max_messages = max_messages
        self.max_sessions = max_sessions
        self._clock = clock
        self._lock = asyncio.Lock()
        self._healthy = True
        self._probed_at = -PROBE_SECONDS
        self.evicted = 0

    @classmethod
    async def open(cls, path: str | Path, *, ttl_seconds: float, clock: Callable[[], float] = time.time,
                   max_messages: int = 1000, max_sessions: int = 250_000) -> SqliteSessions:
        """Create the folder, connect, configure and migrate. Raises :class:`SessionDatabaseError`."""
        db_path = Path(path).expanduser()
        try:
            db_path.parent.mkdir(parents=True, exist_ok=True)
            db = await aiosqlite.connect(db_path, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise SessionDatabaseError(f"cannot open the session database {db_path}: {exc}") from exc
        try:
            await configure(db, db_path)
            await migrate(db, db_path)
        except sqlite3.Error as exc:
            await db.close()
            raise SessionDatabaseError(f"cannot use {db_path} as the session database: {exc}") from exc
        except BaseException:
            await db.close()
            raise
        return cls(db, db_path, ttl_seconds, clock, max_messages, max_sessions)

    # --- the Sessions interface -----------------------------------------------------------------

    async def get(self, tenant_id: str, session_id: str) -> Session | None:
        async with self._reading() as db:
            row = await self._live(db, tenant_id, session_id)
            if row is None:
                return None
            rows = await db.execute_fetchall(
                "SELECT role, content, ts, extra FROM messages WHERE tenant = ? AND session_id = ? ORDER BY seq",
                (tenant_id, session_id))
        session = Session(session_id, row[0])
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
        async with self._writing() as db:
            now = self._clock()
            row = await self._row(db, tenant_id, session_id)
            if row is not None and row[1] + self.ttl <= now:  # expired: the turn starts afresh
                await self._drop(db, [(tenant_id, session_id)])
                row = None
            messages: list[tuple[str, str | None, float, str | None]] = [("user", user_text, started_at, None)]
            for step in steps:
                if step["role"] == "tool":
                    messages.append(("tool", step["content"], now, json.dumps(step["tool_call_id"])))
                else:
                    messages.append(("assistant", step.get("content"), now, json.dumps(step["tool_calls"])))
            messages.append(("assistant", answer, now, None))
            touched = await self._counter(db, "touched", 1)
            if row is None:
                first, start, visible = 0, 0, 2
                await db.execute_fetchall(
                    "INSERT INTO sessions (tenant, session_id, created_at, last_activity, touched, visible_count, "
                    "first_seq, next_seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (tenant_id, session_id, started_at, now, touched, visible, first, len(messages)))
                if await self._counter(db, "sessions", 1) > self.max_sessions:
                    await self._evict_oldest(db, tenant_id, session_id)
            else:
                first, start, visible = row[3], row[4], row[2] + 2
                await db.execute_fetchall(
                    "UPDATE sessions SET last_activity = ?, touched = ?, visible_count = ?, next_seq = ? "
                    "WHERE tenant = ? AND session_id = ?",
                    (now, touched, visible, start + len(messages), tenant_id, session_id))
            await _run_many(db, "INSERT INTO messages (tenant, session_id, seq, role, content, ts, extra) "
                            "VALUES (?, ?, ?, ?, ?, ?, ?)",
                            [(tenant_id, session_id, start + i, *m) for i, m in enumerate(messages)])
            if start + len(messages) - first > self.max_messages:
                visible = await self._trim(db, tenant_id, session_id, first, start + len(messages), visible)
        return visible

    async def page(self, tenant_id: str, limit: int, offset: int) -> Page:
        """Newest activity first; reads O(min(offset, total - offset) + limit) index entries."""
        live, params = self._live_clause(tenant_id)
        columns = "session_id, created_at, last_activity, visible_count"
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
        for sid, created_at, last_activity, visible_count in rows:
            session = Session(sid, created_at)
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
            return 0
        dropped = 0
        while True:
            async with self._writing() as db:
                victims = [(str(t), str(s)) for t, s in await db.execute_fetchall(
                    "SELECT tenant, session_id FROM sessions WHERE last_activity <= ? "
                    "ORDER BY last_activity, touched LIMIT ?", (self._clock() - self.ttl, EXPIRE_BATCH))]
                await self._drop(db, victims)
            dropped += len(victims)
            if len(victims) < EXPIRE_BATCH:
                return dropped

    async def count(self) -> int:
        async with self._reading() as db:
            return await self._counter(db, "sessions", 0)

    async def status(self) -> StoreStatus:
        if self._db is None:
            return "unavailable"
        if not self._healthy and not self._lock.locked() and time.monotonic() - self._probed_at >= PROBE_SECONDS:
            self._probed_at = time.monotonic()
            try:  # a small real write (one page, committed): does the file take writes again?
                async with self._writing() as db:
                    await db.execute_fetchall("UPDATE meta SET value = value WHERE name = 'touched'")
            except StoreUnavailable:
                pass
        return "healthy" if self._healthy else "unavailable"

    async def close(self) -> None:
        """Close the connection; safe to call twice. Later calls raise StoreUnavailable."""
        async with self._lock:
            db, self._db = self._db, None
        if db is not None:
            await db.close()

    # --- internals --------------------------------------------------------------------------------

    @asynccontextmanager
    async def _reading(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._lock:
            try:
                yield self._connection()
            except Exception as exc:
                raise self._failed(exc) from exc

    @asynccontextmanager
    async def _writing(self) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction; anything raised inside (a cancellation too) rolls it back."""
        async with self._lock:
            db = self._connection()
            try:
                await db.execute_fetchall("BEGIN IMMEDIATE")
                yield db
                await db.execute_fetchall("COMMIT")
            except BaseException as exc:
                await self._rollback(db)
                if isinstance(exc, Exception):
                    raise self._failed(exc) from exc
                raise
            self._healthy = True

    def _connection(self) -> aiosqlite.Connection:
        if self._db is None:
            raise StoreUnavailable("the session database is closed")
        return self._db

    def _failed(self, exc: Exception) -> Exception:
        if not isinstance(exc, StoreUnavailable) and not _unavailable(exc):
            return exc
        self._healthy = False
        self._probed_at = time.monotonic()  # readiness holds "unavailable" a while before probing
        if isinstance(exc, StoreUnavailable):
            return exc
        log.warning("session database %s unavailable: %s", self.path, exc)
        return StoreUnavailable(f"the session database cannot be used: {exc}")

    @staticmethod
    async def _rollback(db: aiosqlite.Connection) -> None:
        # Always queued, never skipped on db.in_transaction: after a cancellation the BEGIN may
        # still be waiting in aiosqlite's queue, and the ROLLBACK must run after it.
        try:
            await db.execute_fetchall("ROLLBACK")
        except sqlite3.OperationalError as exc:
            if "no transaction is active" not in str(exc):  # SQLite rolls back by itself after some errors
                log.warning("rollback of the session database failed: %s", exc)
        except (sqlite3.Error, ValueError) as exc:
            log.warning("rollback of the session database failed: %s", exc)

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

    @staticmethod
    async def _counter(db: aiosqlite.Connection, name: str, delta: int) -> int:
        if not delta:
            rows = await db.execute_fetchall("SELECT value FROM meta WHERE name = ?", (name,))
            return int(next(iter(rows))[0])
        rows = await db.execute_fetchall("UPDATE meta SET value = value + ? WHERE name = ? RETURNING value",
                                         (delta, name))
        return int(next(iter(rows))[0])

    async def _drop(self, db: aiosqlite.Connection, keys: list[tuple[str, str]]) -> None:
        if not keys:
            return
        await _run_many(db, "DELETE FROM messages WHERE tenant = ? AND session_id = ?", keys)
        await _run_many(db, "DELETE FROM sessions WHERE tenant = ? AND session_id = ?", keys)
        await self._counter(db, "sessions", -len(keys))

    async def _evict_oldest(self, db: aiosqlite.Connection, tenant_id: str, session_id: str) -> None:
        """Over SESSION_MAX_SESSIONS: the least recently active sessions, of any tenant, go."""
        excess = await self._counter(db, "sessions", 0) - self.max_sessions
        victims = [(str(t), str(s)) for t, s in await db.execute_fetchall(
            "SELECT tenant, session_id FROM sessions WHERE NOT (tenant = ? AND session_id = ?) "
            "ORDER BY last_activity, touched LIMIT ?", (tenant_id, session_id, excess))]
        await self._drop(db, victims)
        self.evicted += len(victims)

    async def _trim(self, db: aiosqlite.Connection, tenant_id: str, session_id: str, first: int, end: int,
                    visible: int) -> int:
        """Drop the oldest whole turns so the session stays within max_messages; the new visible count."""
        excess_at = first + (end - first - self.max_messages)
        key = (tenant_id, session_id)
        rows = await db.execute_fetchall(
            "SELECT MIN(seq) FROM messages WHERE tenant = ? AND session_id = ? AND seq >= ? AND role = 'user'",
            (*key, excess_at))
        cut = next(iter(rows))[0]
        cut = excess_at if cut is None else int(cut)
        removed = int(next(iter(await db.execute_fetchall(
            f"SELECT COUNT(*) FROM messages WHERE tenant = ? AND session_id = ? AND seq < ? AND {_VISIBLE}",
            (*key, cut))))[0])
        await db.execute_fetchall("DELETE FROM messages WHERE tenant = ? AND session_id = ? AND seq < ?",
                                  (*key, cut))
        visible -= removed
        await db.execute_fetchall("UPDATE sessions SET first_seq = ?, visible_count = ? "
                                  "WHERE tenant = ? AND session_id = ?", (cut, visible, *key))
        return visible


async def _run_many(db: aiosqlite.Connection, sql: str, rows: Iterable[Sequence[Any]]) -> None:
    cursor = await db.executemany(sql, rows)
    await cursor.close()


def _message(row: Sequence[Any]) -> Message:
    role, content, ts, extra = row
    return Message(role, content, ts, None if extra is None else json.loads(extra))


__all__ = ["SessionDatabaseError", "SqliteSessions"]
