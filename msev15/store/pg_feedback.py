"""Answer feedback in PostgreSQL (DATABASE_URL): the SQLite store's tables (migration 3 in
:mod:`msev15.store.pg_schema`), shared by every instance. A rating is one upsert, so two instances
rating the same turn for the same caller at once leave one rating."""

from __future__ import annotations

import time
from collections.abc import Iterable

from msev15.store.feedback import MAX_PER_TENANT, CompletedTurn, Feedback, Rating, keep_seconds
from msev15.store.pg_kit import Database, translated

PRUNE_SECONDS = 60.0


class PostgresFeedback:
    def __init__(self, db: Database, *, session_ttl_seconds: float = 0, max_per_tenant: int = MAX_PER_TENANT) -> None:
        self.db = db
        self.keep = keep_seconds(session_ttl_seconds)
        self.max_per_tenant = max_per_tenant
        self._pruned_at = -PRUNE_SECONDS

    @translated
    async def remember(self, turns: Iterable[CompletedTurn]) -> None:
        """The batch in one statement; the turns past their lifetime are pruned at most every
        PRUNE_SECONDS (``known`` ignores them meanwhile), not on every batch."""
        # one row per turn (a statement may not update the same row twice)
        batch = list({(t.tenant_id, t.session_id, t.turn_id): t for t in turns}.values())
        if not batch:
            return
        async with self.db.connection() as conn:
            await conn.execute(
                "INSERT INTO feedback_turns (tenant_id, session_id, turn_id, completed_at) "
                "SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::float8[]) "
                "ON CONFLICT (tenant_id, session_id, turn_id) DO UPDATE SET completed_at = excluded.completed_at",
                [t.tenant_id for t in batch], [t.session_id for t in batch], [t.turn_id for t in batch],
                [t.completed_at for t in batch])
            now = time.monotonic()
            if now - self._pruned_at >= PRUNE_SECONDS:
                self._pruned_at = now
                await conn.execute("DELETE FROM feedback_turns WHERE completed_at < $1", time.time() - self.keep)

    @translated
    async def known(self, tenant_id: str, session_id: str, turn_id: str) -> bool:
        async with self.db.connection() as conn:
            return bool(await conn.fetchval(
                "SELECT 1 FROM feedback_turns WHERE tenant_id = $1 AND session_id = $2 AND turn_id = $3 "
                "AND completed_at >= $4", tenant_id, session_id, turn_id, time.time() - self.keep))

    @translated
    async def rate(self, feedback: Feedback) -> bool:
        f = feedback
        async with self.db.transaction() as conn:
            inserted = await conn.fetchval(
                "INSERT INTO feedback (tenant_id, session_id, turn_id, caller, rating, comment, created_at) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (tenant_id, session_id, turn_id, caller) "
                "DO UPDATE SET rating = excluded.rating, comment = excluded.comment, created_at = excluded.created_at "
                "RETURNING xmax = 0", f.tenant_id, f.session_id, f.turn_id, f.caller, f.rating, f.comment,
                f.created_at)
            if inserted:  # the tenant's oldest beyond the cap
                await conn.execute(
                    "DELETE FROM feedback WHERE ctid IN (SELECT ctid FROM feedback WHERE tenant_id = $1 "
                    "ORDER BY created_at DESC OFFSET $2)", f.tenant_id, self.max_per_tenant)
        return not inserted

    @translated
    async def list(self, tenant_id: str, *, rating: Rating | None = None, since: float | None = None,
                   limit: int = 50) -> list[Feedback]:
        sql = "SELECT session_id, turn_id, caller, rating, comment, created_at FROM feedback WHERE tenant_id = $1"
        args: list[object] = [tenant_id]
        if rating is not None:
            args.append(rating)
            sql += f" AND rating = ${len(args)}"
        if since is not None:
            args.append(since)
            sql += f" AND created_at >= ${len(args)}"
        args.append(limit)
        sql += f" ORDER BY created_at DESC LIMIT ${len(args)}"
        async with self.db.connection() as conn:
            rows = await conn.fetch(sql, *args)
        return [Feedback(tenant_id, r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows]

    @translated
    async def forget(self, tenant_id: str, session_id: str) -> None:
        async with self.db.transaction() as conn:
            await conn.execute("DELETE FROM feedback_turns WHERE tenant_id = $1 AND session_id = $2",
                               tenant_id, session_id)
            await conn.execute("DELETE FROM feedback WHERE tenant_id = $1 AND session_id = $2", tenant_id, session_id)

    async def close(self) -> None:
        """The pool is the topology's: it closes it."""
