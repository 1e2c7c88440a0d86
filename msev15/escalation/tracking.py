"""Delivery tracking in SQLite: one row per message, and the per-tenant, per-day email id sequence.

The sequence lives in the same file, so ``EMAIL-UC2-20251107-001-K7Q2MZ`` ids stay unique across
restarts (and across processes sharing the file: the increment is a single atomic statement).

Records belong to the tenant whose call created them. Each tenant has its own sequence (a shared
one let a tenant read the others' volume off its ids), and a random tag makes ids unique across
tenants and unguessable; still, a record is only ever read back inside its own tenant, and
another tenant's id finds nothing, exactly like an id that was never issued. The tables and their
migration are in :mod:`.schema`.

``sendemail`` idempotency keys (:mod:`.replay`) are written with the call's delivery records,
in one transaction. Writes share one connection, so every write holds ``_writing``: a commit
made for one call never lands in the middle of another call's transaction.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import sqlite3
from datetime import date
from pathlib import Path
from typing import Any

import aiosqlite

from msev15.common.tenancy import DEFAULT_TENANT
from msev15.escalation.models import EMAIL_TAG_ALPHABET, DeliveryRecord
from msev15.escalation.replay import KeyRecord, KeyTaken
from msev15.escalation.schema import migrate

log = logging.getLogger("escalation.tracking")

_COLUMNS = tuple(f.name for f in dataclasses.fields(DeliveryRecord))
_UPDATABLE = frozenset({"attempts", "status", "provider_message_id", "provider_status", "updated_at", "sent_at",
                        "delivered_at", "last_error"})


class TrackingStore:
    """Owns one aiosqlite connection; open with :meth:`open`, always :meth:`close`."""

    def __init__(self, db: aiosqlite.Connection, path: str) -> None:
        self._db = db
        self.path = path
        self._writing = asyncio.Lock()

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
            await migrate(db, str(target))
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

    async def next_email_id(self, use_case: str, day: date, tenant_id: str = DEFAULT_TENANT) -> str:
        """``EMAIL-{use_case}-{yyyymmdd}-{seq:03d}-{tag}``: seq counts per tenant, use case and day
        from 1, so an id says nothing of other tenants' volume; ``tag`` is 6 random characters,
        so ids are unique across tenants and cannot be guessed from one's own."""
        stamp = day.strftime("%Y%m%d")
        async with self._writing:
            async with self._db.execute(
                "INSERT INTO email_sequence_by_tenant (tenant_id, day, use_case, last) VALUES (?, ?, ?, 1) "
                "ON CONFLICT (tenant_id, day, use_case) DO UPDATE SET last = last + 1 RETURNING last",
                (tenant_id, stamp, use_case),
            ) as cursor:
                row = await cursor.fetchone()
            await self._db.commit()
        assert row is not None
        tag = "".join(secrets.choice(EMAIL_TAG_ALPHABET) for _ in range(6))
        return f"EMAIL-{use_case}-{stamp}-{row[0]:03d}-{tag}"

    async def create(self, records: list[DeliveryRecord], *, key: KeyRecord | None = None,
                     forget_keys_before: str = "") -> None:
        """Insert one call's records and, when given, its idempotency key, in one transaction.

        Writing a key first deletes the keys created before ``forget_keys_before`` (expired).
        Raises :class:`KeyTaken` (and writes nothing) when the tenant already holds the key.
        """
        placeholders = ", ".join("?" for _ in _COLUMNS)
        async with self._writing:
            try:
                if key is not None:
                    await self._db.execute("DELETE FROM idempotency_keys WHERE created_at < ?",
                                           (forget_keys_before,))
                    try:
                        await self._db.execute(
                            "INSERT INTO idempotency_keys (tenant_id, idempotency_key, request_sha256, email_id, "
                            "created_at) VALUES (?, ?, ?, ?, ?)",
                            (key.tenant_id, key.key, key.request_sha256, key.email_id, key.created_at),
                        )
                    except sqlite3.IntegrityError:
                        raise KeyTaken(key.key) from None
                await self._db.executemany(
                    f"INSERT INTO email_deliveries ({', '.join(_COLUMNS)}) VALUES ({placeholders})",
                    [tuple(getattr(r, c) for c in _COLUMNS) for r in records],
                )
            except BaseException:
                await self._db.rollback()
                raise
            await self._db.commit()

    async def find_key(self, tenant_id: str, key: str, *, not_before: str) -> KeyRecord | None:
        """The tenant's record of ``key`` if it was created at or after ``not_before``.

        The bound matters: expired keys are only deleted when a new key is written.
        """
        async with self._db.execute(
            "SELECT request_sha256, email_id, created_at FROM idempotency_keys "
            "WHERE tenant_id = ? AND idempotency_key = ? AND created_at >= ?",
            (tenant_id, key, not_before),
        ) as cursor:
            row = await cursor.fetchone()
        if row is None:
            return None
        return KeyRecord(tenant_id=tenant_id, key=key, request_sha256=row[0], email_id=row[1], created_at=row[2])

    async def update(self, email_id: str, role: str, **fields: Any) -> None:
        unknown = set(fields) - _UPDATABLE
        if unknown:
            raise ValueError(f"cannot update {sorted(unknown)}")
        assignments = ", ".join(f"{name} = ?" for name in fields)
        async with self._writing:
            await self._db.execute(
                f"UPDATE email_deliveries SET {assignments} WHERE email_id = ? AND role = ?",
                (*fields.values(), email_id, role),
            )
            await self._db.commit()

    async def fail_pending(self, error: str, stamp: str) -> int:
        """Mark messages a stopped run left ``pending`` as failed; returns how many."""
        async with self._writing:
            cursor = await self._db.execute(
                "UPDATE email_deliveries SET status = 'failed', last_error = ?, updated_at = ? "
                "WHERE status = 'pending'",
                (error, stamp),
            )
            await self._db.commit()
        return cursor.rowcount

    async def get(self, email_id: str, *, tenant_id: str) -> list[DeliveryRecord]:
        """The call's records, customer first; empty when the id is unknown or another tenant's."""
        async with self._db.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM email_deliveries WHERE email_id = ? AND tenant_id = ? "
            "ORDER BY CASE role WHEN 'customer' THEN 0 ELSE 1 END",
            (email_id, tenant_id),
        ) as cursor:
            rows = await cursor.fetchall()
        return [DeliveryRecord(**dict(zip(_COLUMNS, row, strict=True))) for row in rows]
