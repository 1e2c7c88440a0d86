"""Handoff records in SQLite (SESSION_STORE=sqlite): a table in its own file beside the session
database, shared by every process on the machine. A claim reads and writes its row inside one
``BEGIN IMMEDIATE`` transaction, so two processes claiming at once take turns and exactly one
wins. The connection, its lock and its transactions are the store kit's :class:`SqliteFile`
(worker threads, WAL, busy timeout), like the API keys and profiles.
"""

from __future__ import annotations

import builtins
import time
from pathlib import Path
from typing import Literal

from msev15.store.handoffs import (
    ENDED_RETENTION_SECONDS,
    ClaimOutcome,
    HandoffRecord,
    Status,
    claimed,
    ended,
    timeout_settled,
    timeout_taken,
)
from msev15.store.sqlite_kit import SqliteFile

_SCHEMA = """
CREATE TABLE IF NOT EXISTS handoffs (
    tenant TEXT NOT NULL,
    session_id TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT NOT NULL,
    summary TEXT NOT NULL,
    requested_at REAL NOT NULL,
    claimed_by TEXT,
    claimed_by_name TEXT,
    claimed_at REAL,
    ended_at REAL,
    lease_owner TEXT,
    lease_until REAL,
    PRIMARY KEY (tenant, session_id)
) WITHOUT ROWID
"""
_LEASE_COLUMNS = (("lease_owner", "TEXT"), ("lease_until", "REAL"))  # added after the first release
_COLUMNS = ("tenant, session_id, status, reason, summary, requested_at, claimed_by, claimed_by_name, claimed_at, "
            "ended_at, lease_owner, lease_until")


def path_beside(session_db_path: str | Path) -> Path:
    """The handoff file for a session database: ``sessions.db`` → ``sessions.handoffs.db``."""
    path = Path(session_db_path)
    return path.with_name(f"{path.stem}.handoffs{path.suffix or '.db'}")


def _record(row: tuple[object, ...]) -> HandoffRecord:
    return HandoffRecord(*row)  # type: ignore[arg-type]  # the columns are the fields, in order


class SqliteHandoffs:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file = SqliteFile(self.path, schema=(_SCHEMA,))
        self._db = self._file.db
        self._file.atomic(self._add_lease_columns)

    def _add_lease_columns(self) -> None:
        present = {row[1] for row in self._db.execute("PRAGMA table_info(handoffs)")}
        for name, kind in _LEASE_COLUMNS:
            if name not in present:  # a file from before the timeout's lease
                self._db.execute(f"ALTER TABLE handoffs ADD COLUMN {name} {kind}")

    def _row(self, tenant_id: str, session_id: str) -> HandoffRecord | None:
        row = self._db.execute(f"SELECT {_COLUMNS} FROM handoffs WHERE tenant = ? AND session_id = ?",
                               (tenant_id, session_id)).fetchone()
        return None if row is None else _record(row)

    def _put(self, record: HandoffRecord) -> None:
        self._db.execute(f"INSERT OR REPLACE INTO handoffs ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         (record.tenant_id, record.session_id, record.status, record.reason, record.summary,
                          record.requested_at, record.claimed_by, record.claimed_by_name, record.claimed_at,
                          record.ended_at, record.lease_owner, record.lease_until))

    async def request(self, tenant_id: str, session_id: str, reason: str, summary: str, now: float) -> HandoffRecord:
        def step() -> HandoffRecord:
            current = self._row(tenant_id, session_id)
            if current is not None and current.live:
                return current
            record = HandoffRecord(tenant_id, session_id, "waiting", reason, summary, now)
            self._put(record)
            return record

        return await self._file.run_atomic(step)

    async def get(self, tenant_id: str, session_id: str) -> HandoffRecord | None:
        def read() -> HandoffRecord | None:
            return self._row(tenant_id, session_id)

        return await self._file.run(read)

    async def list(self, tenant_id: str, status: Status | Literal["all"]) -> list[HandoffRecord]:
        def read() -> list[HandoffRecord]:
            self._db.execute("DELETE FROM handoffs WHERE tenant = ? AND ended_at < ?",
                             (tenant_id, time.time() - ENDED_RETENTION_SECONDS))
            where, params = ("", ()) if status == "all" else (" AND status = ?", (status,))
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM handoffs WHERE tenant = ?{where} "
                                    "ORDER BY requested_at, session_id", (tenant_id, *params)).fetchall()
            return [_record(r) for r in rows]

        return await self._file.run(read)

    async def claim(self, tenant_id: str, session_id: str, operator_id: str, operator_name: str,
                    now: float) -> tuple[ClaimOutcome, HandoffRecord]:
        def step() -> tuple[ClaimOutcome, HandoffRecord]:
            outcome, record = claimed(self._row(tenant_id, session_id), tenant_id, session_id, operator_id,
                                      operator_name, now)
            if outcome == "claimed":
                self._put(record)
            return outcome, record

        return await self._file.run_atomic(step)

    async def end(self, tenant_id: str, session_id: str, status: Literal["released", "ticketed"], now: float,
                  expect: Status | None = None) -> HandoffRecord | None:
        def step() -> HandoffRecord | None:
            record = ended(self._row(tenant_id, session_id), status, now, expect)
            if record is not None:
                self._put(record)
            return record

        return await self._file.run_atomic(step)

    async def overdue(self, before: float, limit: int = 100) -> builtins.list[HandoffRecord]:
        def read() -> list[HandoffRecord]:
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM handoffs WHERE status = 'waiting' AND "
                                    "requested_at < ? ORDER BY requested_at LIMIT ?", (before, limit)).fetchall()
            return [_record(r) for r in rows]

        return await self._file.run(read)

    async def take_timeout(self, tenant_id: str, session_id: str, owner: str, now: float, lease_until: float,
                           before: float) -> HandoffRecord | None:
        def step() -> HandoffRecord | None:
            record = timeout_taken(self._row(tenant_id, session_id), owner, now, lease_until, before)
            if record is not None:
                self._put(record)
            return record

        return await self._file.run_atomic(step)

    async def settle_timeout(self, tenant_id: str, session_id: str, owner: str) -> bool:
        def step() -> bool:
            record = timeout_settled(self._row(tenant_id, session_id), owner)
            if record is not None:
                self._put(record)
            return record is not None

        return await self._file.run_atomic(step)

    async def unsettled(self, now: float, limit: int = 100) -> builtins.list[HandoffRecord]:
        def read() -> list[HandoffRecord]:
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM handoffs WHERE status = 'ticketed' AND "
                                    "lease_owner IS NOT NULL AND lease_until < ? LIMIT ?", (now, limit)).fetchall()
            return [_record(r) for r in rows]

        return await self._file.run(read)

    async def forget(self, tenant_id: str, session_id: str) -> None:
        def step() -> None:
            self._db.execute("DELETE FROM handoffs WHERE tenant = ? AND session_id = ?", (tenant_id, session_id))

        await self._file.run_atomic(step)

    async def close(self) -> None:
        self._file.close()
