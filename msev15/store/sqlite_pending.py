"""Pending calls in SQLite, in the session database (SESSION_STORE=sqlite): they survive a restart.

Its own connection to SESSION_DB_PATH (WAL, synchronous=FULL, the session store's busy timeout)
and two tables of its own: ``pending_turns`` (one paused step per session: its JSON body and its
expiry) and ``pending_decisions`` (one row per decided call, kept after the step is taken until
the session pauses again, so a late second decider still hears "already decided"). Every change is one
``BEGIN IMMEDIATE ... COMMIT``, so deciding and taking are atomic against each other.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import aiosqlite

from msev15.store.pending import AlreadyDecided, PausedTurn, PendingNotFound
from msev15.store.session_schema import SessionDatabaseError, configure
from msev15.store.sqlite_kit import AsyncSqlite

_TABLES = (
    "CREATE TABLE IF NOT EXISTS pending_turns (tenant TEXT NOT NULL, session_id TEXT NOT NULL, "
    "turn_id TEXT NOT NULL, expires_at REAL NOT NULL, body TEXT NOT NULL, remaining INTEGER NOT NULL, "
    "decided_at REAL NOT NULL DEFAULT 0, PRIMARY KEY (tenant, session_id))",
    "CREATE INDEX IF NOT EXISTS pending_turns_due ON pending_turns (expires_at)",
    "CREATE INDEX IF NOT EXISTS pending_turns_stalled ON pending_turns (remaining, decided_at)",
    "CREATE TABLE IF NOT EXISTS pending_decisions (tenant TEXT NOT NULL, session_id TEXT NOT NULL, "
    "call_id TEXT NOT NULL, decision TEXT NOT NULL, PRIMARY KEY (tenant, session_id, call_id))",
)


class SqlitePendingCalls:
    kind = "sqlite"

    def __init__(self, sqlite: AsyncSqlite) -> None:
        self._sqlite = sqlite
        self.path = sqlite.path

    @classmethod
    async def open(cls, path: str | Path) -> SqlitePendingCalls:
        async def setup(db: aiosqlite.Connection, db_path: Path) -> None:
            await configure(db, db_path)
            for statement in _TABLES:
                await db.execute_fetchall(statement)

        try:
            return cls(await AsyncSqlite.open(path, setup, "the session database"))
        except (OSError, sqlite3.Error) as exc:
            raise SessionDatabaseError(f"cannot open the session database {Path(path).expanduser()}: {exc}") from exc

    async def pause(self, paused: PausedTurn) -> None:
        key = (paused.tenant_id, paused.session_id)
        async with self._sqlite.writing() as db:
            await db.execute_fetchall("DELETE FROM pending_decisions WHERE tenant = ? AND session_id = ?", key)
            await db.execute_fetchall(
                "INSERT OR REPLACE INTO pending_turns (tenant, session_id, turn_id, expires_at, body, remaining) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (*key, paused.turn_id, paused.expires_at, paused.dumps(), paused.remaining))

    async def get(self, tenant_id: str, session_id: str) -> PausedTurn | None:
        async with self._sqlite.reading() as db:
            return await self._get(db, tenant_id, session_id)

    async def decide(self, tenant_id: str, session_id: str, call_id: str, decision: dict[str, Any]) -> int:
        async with self._sqlite.writing() as db:
            paused = await self._get(db, tenant_id, session_id)
            if paused is None and await db.execute_fetchall(
                    "SELECT 1 FROM pending_decisions WHERE tenant = ? AND session_id = ? AND call_id = ?",
                    (tenant_id, session_id, call_id)):
                raise AlreadyDecided(call_id)
            if paused is None or paused.kind_of(call_id) is None:
                raise PendingNotFound(call_id)
            if call_id in paused.decisions:
                raise AlreadyDecided(call_id)
            await db.execute_fetchall(
                "INSERT INTO pending_decisions (tenant, session_id, call_id, decision) VALUES (?, ?, ?, ?)",
                (tenant_id, session_id, call_id, json.dumps(decision)))
            paused.decisions[call_id] = decision
            await db.execute_fetchall(
                "UPDATE pending_turns SET remaining = ?, decided_at = MAX(decided_at, ?) "
                "WHERE tenant = ? AND session_id = ?",
                (paused.remaining, float(decision.get("decided_at", 0.0)), tenant_id, session_id))
            return paused.remaining

    async def decided(self, tenant_id: str, session_id: str, call_id: str) -> bool:
        async with self._sqlite.reading() as db:
            return bool(await db.execute_fetchall(
                "SELECT 1 FROM pending_decisions WHERE tenant = ? AND session_id = ? AND call_id = ?",
                (tenant_id, session_id, call_id)))

    async def take(self, tenant_id: str, session_id: str, turn_id: str | None = None) -> PausedTurn | None:
        async with self._sqlite.writing() as db:
            paused = await self._get(db, tenant_id, session_id)
            if paused is None or (turn_id is not None and paused.turn_id != turn_id):
                return None
            key = (tenant_id, session_id)
            await db.execute_fetchall("DELETE FROM pending_turns WHERE tenant = ? AND session_id = ?", key)
            return paused

    async def due(self, now: float, limit: int = 100) -> list[tuple[str, str, str]]:
        async with self._sqlite.reading() as db:
            rows = await db.execute_fetchall(
                "SELECT tenant, session_id, turn_id FROM pending_turns WHERE expires_at <= ? "
                "ORDER BY expires_at LIMIT ?", (now, limit))
        return [(str(r[0]), str(r[1]), str(r[2])) for r in rows]

    async def stalled(self, before: float, limit: int = 100) -> list[tuple[str, str, str]]:
        async with self._sqlite.reading() as db:
            rows = await db.execute_fetchall(
                "SELECT tenant, session_id, turn_id FROM pending_turns WHERE remaining = 0 AND decided_at < ? "
                "ORDER BY decided_at LIMIT ?", (before, limit))
        return [(str(r[0]), str(r[1]), str(r[2])) for r in rows]

    async def close(self) -> None:
        await self._sqlite.close()

    # --- internals ------------------------------------------------------------------------

    @staticmethod
    async def _get(db: aiosqlite.Connection, tenant_id: str, session_id: str) -> PausedTurn | None:
        key = (tenant_id, session_id)
        rows = list(await db.execute_fetchall(
            "SELECT body FROM pending_turns WHERE tenant = ? AND session_id = ?", key))
        if not rows:
            return None
        decided = await db.execute_fetchall(
            "SELECT call_id, decision FROM pending_decisions WHERE tenant = ? AND session_id = ?", key)
        return PausedTurn.loads(str(rows[0][0]), {str(r[0]): json.loads(r[1]) for r in decided})
