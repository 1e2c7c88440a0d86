"""API keys in PostgreSQL (DATABASE_URL): migration 5 in :mod:`msev15.store.pg_schema`, the SQLite
table (digests only), shared by every instance and by ``msev15 keys``.

The store opens its own small pool on first use (and applies the migrations then), so the CLI
and the service's authenticator open it the same way, with no I/O at construction.
"""

from __future__ import annotations

import hmac
import secrets
import time
from typing import Any

from msev15.common.roles import DEFAULT_ROLE, check_role
from msev15.common.tenancy import check_tenant
from msev15.store.apikeys import PREFIX, ApiKey, digest, key_id
from msev15.store.pg_kit import Database, OnDemand, translated

_COLUMNS = "id, tenant_id, name, created_at, last_used_at, revoked_at, role"


def _record(row: Any) -> ApiKey:
    id_, tenant, name, created, used, revoked, role = row
    return ApiKey(str(id_), str(tenant), str(name), float(created), used, revoked, str(role))


class PostgresApiKeyStore:
    def __init__(self, url: str, *, shared: Database | None = None) -> None:
        self._pool = OnDemand(url, shared=shared)  # shared: the service's pool (the CLI opens its own)

    async def _database(self) -> Database:
        return await self._pool.get()

    @translated
    async def create(self, tenant_id: str, name: str = "", role: str = DEFAULT_ROLE) -> tuple[ApiKey, str]:
        tenant_id, role = check_tenant(tenant_id), check_role(role)
        new_id = secrets.token_hex(8)
        key = f"{PREFIX}{new_id}_{secrets.token_urlsafe(32)}"
        record = ApiKey(new_id, tenant_id, name, time.time(), role=role)
        async with (await self._database()).connection() as conn:
            await conn.execute("INSERT INTO api_keys (id, tenant_id, name, digest, created_at, role) "
                               "VALUES ($1, $2, $3, $4, $5, $6)",
                               new_id, tenant_id, name, digest(key), record.created_at, role)
        return record, key

    @translated
    async def verify(self, key: str) -> ApiKey | None:
        found = key_id(key)
        if found is None:
            return None
        async with (await self._database()).connection() as conn:
            row = await conn.fetchrow(f"SELECT {_COLUMNS}, digest FROM api_keys WHERE id = $1", found)
            if row is None or not hmac.compare_digest(str(row[7]), digest(key)):
                return None
            record = _record(tuple(row)[:7])
            if not record.active:
                return None
            await conn.execute("UPDATE api_keys SET last_used_at = $1 WHERE id = $2", time.time(), record.id)
        return record

    @translated
    async def list(self) -> list[ApiKey]:
        async with (await self._database()).connection() as conn:
            rows = await conn.fetch(f"SELECT {_COLUMNS} FROM api_keys ORDER BY created_at, id")
        return [_record(r) for r in rows]

    @translated
    async def revoke(self, key_id: str) -> bool:
        async with (await self._database()).connection() as conn:
            found = await conn.fetchval("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL "
                                        "RETURNING id", time.time(), key_id)
        return found is not None

    async def close(self) -> None:
        await self._pool.close()
