"""API keys: who may call the service, and for which tenant.

A key reads ``msev15_<id>_<secret>``: the prefix makes a leaked key easy to recognise (and to scan
for), the id finds its row, and the secret is 256 random bits. Only a SHA-256 digest of the
whole key is stored; with that much entropy a slow hash adds nothing, and lookups stay cheap.
Digests are compared in constant time.

:class:`ApiKeyStore` is the interface; :class:`SqliteApiKeyStore` keeps keys in one SQLite file
(``API_KEYS_DB_PATH``) that every instance on a machine shares, so ``msev15 keys revoke`` in one
shell reaches every running instance (each caches a lookup for at most a few seconds, see
:mod:`msev15.handlers.auth`). A Redis store can join behind the same interface.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from msev15.common.roles import DEFAULT_ROLE, check_role
from msev15.common.tenancy import check_tenant
from msev15.store.sqlite_kit import SqliteFile

PREFIX = "msev15_"
KEY_RE = re.compile(r"msev15_(?P<id>[0-9a-f]{16})_(?P<secret>[A-Za-z0-9_-]{43})")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    name TEXT NOT NULL DEFAULT '',
    digest TEXT NOT NULL,
    created_at REAL NOT NULL,
    last_used_at REAL,
    revoked_at REAL,
    role TEXT NOT NULL DEFAULT 'customer'
)
"""
# Files made before keys had roles: their keys become customers, as they were.
_ADD_ROLE = "ALTER TABLE api_keys ADD COLUMN role TEXT NOT NULL DEFAULT 'customer'"
_COLUMNS = "id, tenant_id, name, created_at, last_used_at, revoked_at, role"


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A key's record: never the secret."""

    id: str
    tenant_id: str
    name: str
    created_at: float
    last_used_at: float | None = None
    revoked_at: float | None = None
    role: str = DEFAULT_ROLE

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def key_id(key: str) -> str | None:
    """The id inside a well-formed key, None for anything else (nothing to look up)."""
    match = KEY_RE.fullmatch(key)
    return match["id"] if match else None


class ApiKeyStore(Protocol):
    async def create(self, tenant_id: str, name: str = "", role: str = DEFAULT_ROLE) -> tuple[ApiKey, str]:
        """A new key for ``tenant_id`` acting as ``role``: its record and the key itself (shown once,
        never stored). ValueError for a bad tenant or role."""

    async def verify(self, key: str) -> ApiKey | None:
        """The active key record ``key`` belongs to (and note its use), or None."""

    async def list(self) -> list[ApiKey]:
        """Every key, oldest first, revoked ones included."""

    async def revoke(self, key_id: str) -> bool:
        """Revoke; False when no active key has that id."""

    async def close(self) -> None: ...


class SqliteApiKeyStore:
    """One SQLite file; each call runs in a worker thread on one connection (WAL, busy timeout)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file = SqliteFile(self.path, schema=(_SCHEMA,))
        db = self._file.db
        with self._file.lock:
            if "role" not in {row[1] for row in db.execute("PRAGMA table_info(api_keys)")}:
                db.execute(_ADD_ROLE)

    async def _call(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        return await self._file.run(lambda: self._file.db.execute(sql, params).fetchall())

    @staticmethod
    def _record(row: tuple[object, ...]) -> ApiKey:
        id_, tenant, name, created, used, revoked, role = row
        return ApiKey(str(id_), str(tenant), str(name), float(created),  # type: ignore[arg-type]
                      None if used is None else float(used),  # type: ignore[arg-type]
                      None if revoked is None else float(revoked), str(role))  # type: ignore[arg-type]

    async def create(self, tenant_id: str, name: str = "", role: str = DEFAULT_ROLE) -> tuple[ApiKey, str]:
        tenant_id, role = check_tenant(tenant_id), check_role(role)
        new_id = secrets.token_hex(8)
        key = f"{PREFIX}{new_id}_{secrets.token_urlsafe(32)}"
        record = ApiKey(new_id, tenant_id, name, time.time(), role=role)
        await self._call("INSERT INTO api_keys (id, tenant_id, name, digest, created_at, role) "
                         "VALUES (?, ?, ?, ?, ?, ?)", (new_id, tenant_id, name, digest(key), record.created_at, role))
        return record, key

    async def verify(self, key: str) -> ApiKey | None:
        found = key_id(key)
        if found is None:
            return None
        rows = await self._call(f"SELECT {_COLUMNS}, digest FROM api_keys WHERE id = ?", (found,))
        if not rows or not hmac.compare_digest(str(rows[0][7]), digest(key)):
            return None
        record = self._record(rows[0][:7])
        if not record.active:
            return None
        await self._call("UPDATE api_keys SET last_used_at = ? WHERE id = ?", (time.time(), record.id))
        return record

    async def list(self) -> list[ApiKey]:
        rows = await self._call(f"SELECT {_COLUMNS} FROM api_keys ORDER BY created_at, id")
        return [self._record(row) for row in rows]

    async def revoke(self, key_id: str) -> bool:
        rows = await self._call("UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL "
                                "RETURNING id", (time.time(), key_id))
        return bool(rows)

    async def close(self) -> None:
        self._file.close()

