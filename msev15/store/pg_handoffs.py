"""Handoff records in PostgreSQL (DATABASE_URL): migration 4 in :mod:`msev15.store.pg_schema`,
shared by every instance. A claim or an end reads its row ``FOR UPDATE`` and writes it in one
transaction (a request inserts or locks it), so of operators claiming at once on any instances
exactly one wins. The timeout's lease (``take_timeout``) is taken the same way: of instances
sweeping at once exactly one takes a handoff's ticket work, and another takes it over when the
owner's lease lapses."""

from __future__ import annotations

import builtins
import time
from typing import Any, Literal

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
from msev15.store.pg_kit import Conn, Database, translated

_COLUMNS = ("tenant, session_id, status, reason, summary, requested_at, claimed_by, claimed_by_name, claimed_at, "
            "ended_at, lease_owner, lease_until")
_PUT = (f"INSERT INTO handoffs ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) "
        "ON CONFLICT (tenant, session_id) DO UPDATE SET status = excluded.status, reason = excluded.reason, "
        "summary = excluded.summary, requested_at = excluded.requested_at, claimed_by = excluded.claimed_by, "
        "claimed_by_name = excluded.claimed_by_name, claimed_at = excluded.claimed_at, ended_at = excluded.ended_at, "
        "lease_owner = excluded.lease_owner, lease_until = excluded.lease_until")


def _record(row: Any) -> HandoffRecord:
    return HandoffRecord(*row)  # the columns are the fields, in order


class PostgresHandoffs:
    def __init__(self, db: Database) -> None:
        self.db = db

    @staticmethod
    async def _locked(conn: Conn, tenant_id: str, session_id: str) -> HandoffRecord | None:
        # Lock the key (a transaction-scoped advisory lock: there may be no row to lock yet), so two
        # requests or claims on any instances never both see "no record".
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1), hashtext($2))",
                           tenant_id, session_id)
        row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM handoffs WHERE tenant = $1 AND session_id = $2 FOR UPDATE",
                                  tenant_id, session_id)
        return None if row is None else _record(row)

    @staticmethod
    async def _put(conn: Conn, r: HandoffRecord) -> None:
        await conn.execute(_PUT, r.tenant_id, r.session_id, r.status, r.reason, r.summary, r.requested_at,
                           r.claimed_by, r.claimed_by_name, r.claimed_at, r.ended_at, r.lease_owner, r.lease_until)

    @translated
    async def request(self, tenant_id: str, session_id: str, reason: str, summary: str, now: float) -> HandoffRecord:
        async with self.db.transaction() as conn:
            current = await self._locked(conn, tenant_id, session_id)
            if current is not None and current.live:
                return current
            record = HandoffRecord(tenant_id, session_id, "waiting", reason, summary, now)
            await self._put(conn, record)
            return record

    @translated
    async def get(self, tenant_id: str, session_id: str) -> HandoffRecord | None:
        async with self.db.connection() as conn:
            row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM handoffs WHERE tenant = $1 AND session_id = $2",
                                      tenant_id, session_id)
        return None if row is None else _record(row)

    @translated
    async def list(self, tenant_id: str, status: Status | Literal["all"]) -> list[HandoffRecord]:
        async with self.db.connection() as conn:
            await conn.execute("DELETE FROM handoffs WHERE tenant = $1 AND ended_at < $2",
                               tenant_id, time.time() - ENDED_RETENTION_SECONDS)
            if status == "all":
                rows = await conn.fetch(f"SELECT {_COLUMNS} FROM handoffs WHERE tenant = $1 "
                                        "ORDER BY requested_at, session_id", tenant_id)
            else:
                rows = await conn.fetch(f"SELECT {_COLUMNS} FROM handoffs WHERE tenant = $1 AND status = $2 "
                                        "ORDER BY requested_at, session_id", tenant_id, status)
        return [_record(r) for r in rows]

    @translated
    async def claim(self, tenant_id: str, session_id: str, operator_id: str, operator_name: str,
                    now: float) -> tuple[ClaimOutcome, HandoffRecord]:
        async with self.db.transaction() as conn:
            outcome, record = claimed(await self._locked(conn, tenant_id, session_id), tenant_id, session_id,
                                      operator_id, operator_name, now)
            if outcome == "claimed":
                await self._put(conn, record)
            return outcome, record

    @translated
    async def end(self, tenant_id: str, session_id: str, status: Literal["released", "ticketed"], now: float,
                  expect: Status | None = None) -> HandoffRecord | None:
        async with self.db.transaction() as conn:
            record = ended(await self._locked(conn, tenant_id, session_id), status, now, expect)
            if record is not None:
                await self._put(conn, record)
            return record

    @translated
    async def overdue(self, before: float, limit: int = 100) -> builtins.list[HandoffRecord]:
        async with self.db.connection() as conn:
            rows = await conn.fetch(f"SELECT {_COLUMNS} FROM handoffs WHERE status = 'waiting' AND requested_at < $1 "
                                    "ORDER BY requested_at LIMIT $2", before, limit)
        return [_record(r) for r in rows]

    @translated
    async def take_timeout(self, tenant_id: str, session_id: str, owner: str, now: float, lease_until: float,
                           before: float) -> HandoffRecord | None:
        async with self.db.transaction() as conn:
            record = timeout_taken(await self._locked(conn, tenant_id, session_id), owner, now, lease_until, before)
            if record is not None:
                await self._put(conn, record)
            return record

    @translated
    async def settle_timeout(self, tenant_id: str, session_id: str, owner: str) -> bool:
        async with self.db.transaction() as conn:
            record = timeout_settled(await self._locked(conn, tenant_id, session_id), owner)
            if record is not None:
                await self._put(conn, record)
            return record is not None

    @translated
    async def unsettled(self, now: float, limit: int = 100) -> builtins.list[HandoffRecord]:
        async with self.db.connection() as conn:
            rows = await conn.fetch(f"SELECT {_COLUMNS} FROM handoffs WHERE status = 'ticketed' "
                                    "AND lease_owner IS NOT NULL AND lease_until < $1 ORDER BY lease_until LIMIT $2",
                                    now, limit)
        return [_record(r) for r in rows]

    @translated
    async def forget(self, tenant_id: str, session_id: str) -> None:
        async with self.db.connection() as conn:
            await conn.execute("DELETE FROM handoffs WHERE tenant = $1 AND session_id = $2", tenant_id, session_id)

    async def close(self) -> None:
        """The pool is the topology's: it closes it."""
