"""Feedback in the session database file (SESSION_STORE=sqlite): durable with the sessions.

Its own two tables (``feedback_turns``, ``feedback``, created if missing, outside the session
schema's numbered migrations) on its own connection, in WAL mode like the sessions'. Writes are
single statements; aiosqlite runs one connection's statements one at a time.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path

import aiosqlite

from msev15.store.base import StoreUnavailable
from msev15.store.feedback import MAX_PER_TENANT, CompletedTurn, Feedback, Rating, keep_seconds
from msev15.store.session_schema import BUSY_TIMEOUT_MS
from msev15.store.sqlite_kit import AsyncSqlite, enable_wal

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS feedback_turns (
         tenant_id TEXT NOT NULL, session_id TEXT NOT NULL, turn_id TEXT NOT NULL, completed_at REAL NOT NULL,
         PRIMARY KEY (tenant_id, session_id, turn_id)) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS feedback_turns_by_time ON feedback_turns (completed_at)",
    """CREATE TABLE IF NOT EXISTS feedback (
         tenant_id TEXT NOT NULL, session_id TEXT NOT NULL, turn_id TEXT NOT NULL, caller TEXT NOT NULL,
         rating TEXT NOT NULL, comment TEXT, created_at REAL NOT NULL,
         PRIMARY KEY (tenant_id, session_id, turn_id, caller))""",
    "CREATE INDEX IF NOT EXISTS feedback_by_time ON feedback (tenant_id, created_at)",
)


class SqliteFeedback:
    def __init__(self, sqlite: AsyncSqlite, keep: float, max_per_tenant: int) -> None:
        self._sqlite = sqlite
        self.keep = keep
        self.max_per_tenant = max_per_tenant

    @classmethod
    async def open(cls, path: str | Path, *, session_ttl_seconds: float = 0,
                   max_per_tenant: int = MAX_PER_TENANT) -> SqliteFeedback:
        async def setup(db: aiosqlite.Connection, _: Path) -> None:
            await db.execute_fetchall(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS:d}")
            await enable_wal(db, BUSY_TIMEOUT_MS)
            for statement in SCHEMA:
                await db.execute_fetchall(statement)

        sqlite = await AsyncSqlite.open(path, setup, "the feedback tables")
        return cls(sqlite, keep_seconds(session_ttl_seconds), max_per_tenant)

    @property
    def _db(self) -> aiosqlite.Connection:
        """Single statements need no lock: aiosqlite runs one connection's statements one at a time."""
        return self._sqlite.connection()

    async def remember(self, turns: Iterable[CompletedTurn]) -> None:
        rows = [(t.tenant_id, t.session_id, t.turn_id, t.completed_at) for t in turns]
        try:
            await self._db.executemany("INSERT OR REPLACE INTO feedback_turns VALUES (?, ?, ?, ?)", rows)
            await self._db.execute("DELETE FROM feedback_turns WHERE completed_at < ?", (time.time() - self.keep,))
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"the feedback tables are unavailable: {exc}") from exc

    async def known(self, tenant_id: str, session_id: str, turn_id: str) -> bool:
        rows = await self._db.execute_fetchall(
            "SELECT 1 FROM feedback_turns WHERE tenant_id = ? AND session_id = ? AND turn_id = ? AND completed_at >= ?",
            (tenant_id, session_id, turn_id, time.time() - self.keep))
        return bool(list(rows))

    async def rate(self, feedback: Feedback) -> bool:
        f = feedback
        try:
            cursor = await self._db.execute(
                "UPDATE feedback SET rating = ?, comment = ?, created_at = ? "
                "WHERE tenant_id = ? AND session_id = ? AND turn_id = ? AND caller = ?",
                (f.rating, f.comment, f.created_at, f.tenant_id, f.session_id, f.turn_id, f.caller))
            if cursor.rowcount:
                return True
            await self._db.execute("INSERT INTO feedback VALUES (?, ?, ?, ?, ?, ?, ?)",
                                   (f.tenant_id, f.session_id, f.turn_id, f.caller, f.rating, f.comment, f.created_at))
            await self._db.execute(  # the tenant's oldest beyond the cap
                "DELETE FROM feedback WHERE tenant_id = ? AND rowid IN (SELECT rowid FROM feedback WHERE tenant_id = ? "
                "ORDER BY created_at DESC LIMIT -1 OFFSET ?)", (f.tenant_id, f.tenant_id, self.max_per_tenant))
        except sqlite3.IntegrityError:  # the same caller rated in between (another instance): it is a replace
            return await self.rate(feedback)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"the feedback tables are unavailable: {exc}") from exc
        return False

    async def list(self, tenant_id: str, *, rating: Rating | None = None, since: float | None = None,
                   limit: int = 50) -> list[Feedback]:
        sql = "SELECT session_id, turn_id, caller, rating, comment, created_at FROM feedback WHERE tenant_id = ?"
        args: list[object] = [tenant_id]
        if rating is not None:
            sql += " AND rating = ?"
            args.append(rating)
        if since is not None:
            sql += " AND created_at >= ?"
            args.append(since)
        sql += " ORDER BY created_at DESC LIMIT ?"
        args.append(limit)
        rows = await self._db.execute_fetchall(sql, args)
        return [Feedback(tenant_id, r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows]

    async def forget(self, tenant_id: str, session_id: str) -> None:
        try:
            args = (tenant_id, session_id)
            await self._db.execute("DELETE FROM feedback_turns WHERE tenant_id = ? AND session_id = ?", args)
            await self._db.execute("DELETE FROM feedback WHERE tenant_id = ? AND session_id = ?", args)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"the feedback tables are unavailable: {exc}") from exc

    async def close(self) -> None:
        await self._sqlite.close()
