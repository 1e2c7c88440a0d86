"""Delivery tracking in SQLite: one row per message, and the per-day email id sequence.

The sequence lives in the same file, so ``EMAIL-UC2-20251107-001`` ids stay unique across
restarts (and across processes sharing the file: the increment is a single atomic statement).
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import date
from pathlib import Path
from typing import Any

import aiosqlite

from msev15.escalation.models import DeliveryRecord

log = logging.getLogger("escalation.tracking")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS email_sequence (
    day TEXT NOT NULL,
    use_case TEXT NOT NULL,
    last INTEGER NOT NULL,
    PRIMARY KEY (day, use_case)
);
CREATE TABLE IF NOT EXISTS email_deliveries (
    email_id TEXT NOT NULL,
    role TEXT NOT NULL,
    ticket_id TEXT NOT NULL,
    use_case TEXT NOT NULL,
    recipient TEXT NOT NULL,
    backend TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL,
    provider_message_id TEXT NOT NULL DEFAULT '',
    provider_status TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    sent_at TEXT NOT NULL DEFAULT '',
    delivered_at TEXT NOT NULL DEFAULT '',
    last_error TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (email_id, role)
);
CREATE INDEX IF NOT EXISTS email_deliveries_ticket ON email_deliveries (ticket_id);
"""

_COLUMNS = tuple(f.name for f in dataclasses.fields(DeliveryRecord))
_UPDATABLE = frozenset({"attempts", "status", "provider_message_id", "provider_status", "updated_at", "sent_at",
                        "delivered_at", "last_error"})


class TrackingStore:
    """Owns one aiosqlite connection; open with :meth:`open`, always :meth:`close`."""

    def __init__(self, db: aiosqlite.Connection, path: str) -> None:
        self._db = db
        self.path = path

    @classmethod
    async def open(cls, path: str | Path) -> TrackingStore:
        target = Path(path)
        if str(path) != ":memory:":
            target.parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(str(target))
        try:
            await db.execute("PRAGMA busy_timeout = 5000")
            if str(path) != ":memory:":
                await db.execute("PRAGMA journal_mode = WAL")
            await db.executescript(_SCHEMA)
            await db.commit()
        except BaseException:
            await db.close()
            raise
        log.info("Delivery records in %s", target)
        return cls(db, str(target))

    async def close(self) -> None:
        await self._db.close()

    async def ping(self) -> None:
        async with self._db.execute("SELECT 1") as cursor:
            await cursor.fetchone()

    async def next_email_id(self, use_case: str, day: date) -> str:
        """``EMAIL-{use_case}-{yyyymmdd}-{seq:03d}``, seq counting per use case and day from 1."""
        stamp = day.strftime("%Y%m%d")
        async with self._db.execute(
            "INSERT INTO email_sequence (day, use_case, last) VALUES (?, ?, 1) "
            "ON CONFLICT (day, use_case) DO UPDATE SET last = last + 1 RETURNING last",
            (stamp, use_case),
        ) as cursor:
            row = await cursor.fetchone()
        await self._db.commit()
        assert row is not None
        return f"EMAIL-{use_case}-{stamp}-{row[0]:03d}"

    async def create(self, records: list[DeliveryRecord]) -> None:
        placeholders = ", ".join("?" for _ in _COLUMNS)
        await self._db.executemany(
            f"INSERT INTO email_deliveries ({', '.join(_COLUMNS)}) VALUES ({placeholders})",
            [tuple(getattr(r, c) for c in _COLUMNS) for r in records],
        )
        await self._db.commit()

    async def update(self, email_id: str, role: str, **fields: Any) -> None:
        unknown = set(fields) - _UPDATABLE
        if unknown:
            raise ValueError(f"cannot update {sorted(unknown)}")
        assignments = ", ".join(f"{name} = ?" for name in fields)
        await self._db.execute(
            f"UPDATE email_deliveries SET {assignments} WHERE email_id = ? AND role = ?",
            (*fields.values(), email_id, role),
        )
        await self._db.commit()

    async def fail_pending(self, error: str, stamp: str) -> int:
        """Mark messages a stopped run left ``pending`` as failed; returns how many."""
        cursor = await self._db.execute(
            "UPDATE email_deliveries SET status = 'failed', last_error = ?, updated_at = ? WHERE status = 'pending'",
            (error, stamp),
        )
        await self._db.commit()
        return cursor.rowcount

    async def get(self, email_id: str) -> list[DeliveryRecord]:
        """The call's records, customer first; empty when the id is unknown."""
        async with self._db.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM email_deliveries WHERE email_id = ? "
            "ORDER BY CASE role WHEN 'customer' THEN 0 ELSE 1 END",
            (email_id,),
        ) as cursor:
            rows = await cursor.fetchall()
        return [DeliveryRecord(**dict(zip(_COLUMNS, row, strict=True))) for row in rows]
