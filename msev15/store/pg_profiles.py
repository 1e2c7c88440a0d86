"""Tenant profiles in PostgreSQL (DATABASE_URL): migration 6 in :mod:`msev15.store.pg_schema`,
the SQLite store's two tables (``profile_heads``, ``profile_versions``), shared by every instance
and by ``msev15 profile``.

A write takes the tenant's transaction-scoped advisory lock, reads the head, checks ``if_version``
and writes in the same transaction: of two racing conditional PUTs (on any instances) exactly one
wins, the other gets :class:`~msev15.store.profiles.VersionConflict`. The per-turn read is one
primary-key lookup of the committed head (no cache of which version is current); records are
cached by version (immutable).
"""

from __future__ import annotations

import json
import time
from typing import Any

from msev15.store.pg_kit import Conn, Database, OnDemand, translated
from msev15.store.profiles import MAX_VERSIONS, ProfileRecord, RecordCache, VersionConflict, stored_copy

_CACHED_RECORDS = 1024
_SELECT = "SELECT tenant_id, version, profile, updated_at, updated_by FROM profile_versions WHERE tenant_id = $1"


class PostgresProfiles:
    def __init__(self, url: str, *, max_versions: int = MAX_VERSIONS, shared: Database | None = None) -> None:
        self._pool = OnDemand(url, shared=shared)  # shared: the service's pool (the CLI opens its own)
        self.max_versions = max_versions
        self._records = RecordCache(_CACHED_RECORDS)

    # --- reads --------------------------------------------------------------------------------

    @translated
    async def current_version(self, tenant_id: str) -> int:
        async with (await self._pool.get()).connection() as conn:
            found = await conn.fetchval("SELECT current FROM profile_heads WHERE tenant_id = $1", tenant_id)
        return int(found) if found is not None else 0

    async def current(self, tenant_id: str) -> ProfileRecord | None:
        n = await self.current_version(tenant_id)
        return await self.version(tenant_id, n) if n else None

    @translated
    async def version(self, tenant_id: str, n: int) -> ProfileRecord | None:
        cached = self._records.get(tenant_id, n)
        if cached is not None:
            return cached
        async with (await self._pool.get()).connection() as conn:
            row = await conn.fetchrow(_SELECT + " AND version = $2", tenant_id, n)
        return None if row is None else self._remember(row)

    @translated
    async def versions(self, tenant_id: str) -> list[ProfileRecord]:
        async with (await self._pool.get()).connection() as conn:
            rows = await conn.fetch(_SELECT + " ORDER BY version DESC", tenant_id)
        return [self._remember(row) for row in rows]

    def _remember(self, row: Any) -> ProfileRecord:
        return self._records.remember(str(row[0]), int(row[1]), row[2], row[3], str(row[4]))

    # --- writes -------------------------------------------------------------------------------

    async def put(self, tenant_id: str, profile: dict[str, Any], by: str, *, if_version: int | None = None) -> int:
        text = json.dumps(stored_copy(profile), ensure_ascii=False)  # validated (ProfileInvalid) first
        return await self._write(tenant_id, text, by, if_version, None)

    async def rollback(self, tenant_id: str, n: int, by: str) -> int:
        return await self._write(tenant_id, None, by, None, n)

    @translated
    async def delete(self, tenant_id: str, by: str) -> bool:
        async with (await self._pool.get()).connection() as conn:
            found = await conn.fetchval("UPDATE profile_heads SET current = 0 WHERE tenant_id = $1 AND current > 0 "
                                        "RETURNING tenant_id", tenant_id)
        return found is not None

    @translated
    async def _write(self, tenant_id: str, text: str | None, by: str, if_version: int | None,
                     copy_of: int | None) -> int:
        async with (await self._pool.get()).transaction() as conn:
            current, latest = await _head(conn, tenant_id)
            if if_version is not None and if_version != current:
                raise VersionConflict(current)
            if copy_of is not None:
                text = await conn.fetchval("SELECT profile FROM profile_versions WHERE tenant_id = $1 "
                                           "AND version = $2", tenant_id, copy_of)
                if text is None:
                    raise LookupError(f"version {copy_of} is not kept")
            n = latest + 1
            await conn.execute("INSERT INTO profile_versions (tenant_id, version, profile, updated_at, updated_by) "
                               "VALUES ($1, $2, $3, $4, $5)", tenant_id, n, text, time.time(), by)
            await conn.execute("INSERT INTO profile_heads (tenant_id, current, latest) VALUES ($1, $2, $2) "
                               "ON CONFLICT (tenant_id) DO UPDATE SET current = excluded.current, "
                               "latest = excluded.latest", tenant_id, n)
            await conn.execute("DELETE FROM profile_versions WHERE tenant_id = $1 AND version <= $2",
                               tenant_id, n - self.max_versions)
        return n

    async def close(self) -> None:
        await self._pool.close()


async def _head(conn: Conn, tenant_id: str) -> tuple[int, int]:
    """The tenant's (current, latest), under its write lock for the rest of the transaction (an
    advisory lock: before the first write there is no row to lock)."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('profile'), hashtext($1))", tenant_id)
    row = await conn.fetchrow("SELECT current, latest FROM profile_heads WHERE tenant_id = $1", tenant_id)
    return (int(row[0]), int(row[1])) if row is not None else (0, 0)
