"""Pending calls in PostgreSQL (DATABASE_URL): the SQLite store's tables (migration 2 in
:mod:`msev15.store.pg_schema`) shared by every instance.

Deciding and taking lock the session's ``pending_turns`` row (``FOR UPDATE``) in one transaction,
so of two racing deciders (on any instances) exactly one wins and the other gets
:class:`~msev15.store.pending.AlreadyDecided`.
"""

from __future__ import annotations

import json
from typing import Any

from msev15.store.pending import AlreadyDecided, PausedTurn, PendingNotFound
from msev15.store.pg_kit import Conn, Database, translated

_DECIDED = "SELECT 1 FROM pending_decisions WHERE tenant = $1 AND session_id = $2 AND call_id = $3"


class PostgresPendingCalls:
    kind = "postgres"

    def __init__(self, db: Database) -> None:
        self.db = db

    @translated
    async def pause(self, paused: PausedTurn) -> None:
        key = (paused.tenant_id, paused.session_id)
        async with self.db.transaction() as conn:
            await conn.execute("DELETE FROM pending_decisions WHERE tenant = $1 AND session_id = $2", *key)
            await conn.execute(
                "INSERT INTO pending_turns (tenant, session_id, turn_id, expires_at, body, remaining) "
                "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant, session_id) DO UPDATE SET "
                "turn_id = excluded.turn_id, expires_at = excluded.expires_at, body = excluded.body, "
                "remaining = excluded.remaining, decided_at = 0",
                *key, paused.turn_id, paused.expires_at, paused.dumps(), paused.remaining)

    @translated
    async def get(self, tenant_id: str, session_id: str) -> PausedTurn | None:
        """One statement (every turn asks whether its session has a paused step)."""
        async with self.db.connection() as conn:
            row = await conn.fetchrow(
                "SELECT p.body, COALESCE(json_object_agg(d.call_id, d.decision::json) "
                "FILTER (WHERE d.call_id IS NOT NULL), '{}')::text FROM pending_turns p LEFT JOIN pending_decisions d "
                "ON d.tenant = p.tenant AND d.session_id = p.session_id WHERE p.tenant = $1 AND p.session_id = $2 "
                "GROUP BY p.body", tenant_id, session_id)
        return None if row is None else PausedTurn.loads(str(row[0]), json.loads(row[1]))

    @translated
    async def decide(self, tenant_id: str, session_id: str, call_id: str, decision: dict[str, Any]) -> int:
        async with self.db.transaction() as conn:
            paused = await _get(conn, tenant_id, session_id, lock=True)
            if paused is None and await conn.fetchval(_DECIDED, tenant_id, session_id, call_id):
                raise AlreadyDecided(call_id)
            if paused is None or paused.kind_of(call_id) is None:
                raise PendingNotFound(call_id)
            if call_id in paused.decisions:
                raise AlreadyDecided(call_id)
            await conn.execute("INSERT INTO pending_decisions (tenant, session_id, call_id, decision) "
                               "VALUES ($1, $2, $3, $4)", tenant_id, session_id, call_id, json.dumps(decision))
            paused.decisions[call_id] = decision
            await conn.execute("UPDATE pending_turns SET remaining = $1, decided_at = GREATEST(decided_at, $2) "
                               "WHERE tenant = $3 AND session_id = $4",
                               paused.remaining, float(decision.get("decided_at", 0.0)), tenant_id, session_id)
            return paused.remaining

    @translated
    async def decided(self, tenant_id: str, session_id: str, call_id: str) -> bool:
        async with self.db.connection() as conn:
            return bool(await conn.fetchval(_DECIDED, tenant_id, session_id, call_id))

    @translated
    async def take(self, tenant_id: str, session_id: str, turn_id: str | None = None) -> PausedTurn | None:
        async with self.db.transaction() as conn:
            paused = await _get(conn, tenant_id, session_id, lock=True)
            if paused is None or (turn_id is not None and paused.turn_id != turn_id):
                return None
            await conn.execute("DELETE FROM pending_turns WHERE tenant = $1 AND session_id = $2",
                               tenant_id, session_id)
            return paused

    @translated
    async def due(self, now: float, limit: int = 100) -> list[tuple[str, str, str]]:
        async with self.db.connection() as conn:
            rows = await conn.fetch("SELECT tenant, session_id, turn_id FROM pending_turns WHERE expires_at <= $1 "
                                    "ORDER BY expires_at LIMIT $2", now, limit)
        return [(str(r[0]), str(r[1]), str(r[2])) for r in rows]

    @translated
    async def stalled(self, before: float, limit: int = 100) -> list[tuple[str, str, str]]:
        async with self.db.connection() as conn:
            rows = await conn.fetch("SELECT tenant, session_id, turn_id FROM pending_turns WHERE remaining = 0 "
                                    "AND decided_at < $1 ORDER BY decided_at LIMIT $2", before, limit)
        return [(str(r[0]), str(r[1]), str(r[2])) for r in rows]

    async def close(self) -> None:
        """The pool is the topology's: it closes it."""


async def _get(conn: Conn, tenant_id: str, session_id: str, *, lock: bool) -> PausedTurn | None:
    body = await conn.fetchval("SELECT body FROM pending_turns WHERE tenant = $1 AND session_id = $2"
                               + (" FOR UPDATE" if lock else ""), tenant_id, session_id)
    if body is None:
        return None
    decided = await conn.fetch("SELECT call_id, decision FROM pending_decisions WHERE tenant = $1 AND session_id = $2",
                               tenant_id, session_id)
    return PausedTurn.loads(str(body), {str(r[0]): json.loads(r[1]) for r in decided})
