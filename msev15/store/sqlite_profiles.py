"""Tenant profiles in SQLite: the API keys file (``API_KEYS_DB_PATH``), where the service's
configuration lives, so profiles survive a restart under every SESSION_STORE but redis, and
``msev15 profile`` opens the same file the service uses (as ``msev15 keys`` does).

Two tables: ``profile_heads`` (per tenant: the current version, 0 for none, and the latest) and
``profile_versions`` (one immutable row per version, the newest MAX_VERSIONS kept). A write runs
in one ``BEGIN IMMEDIATE`` transaction, so writers in every process on the file are serialized and
a conditional write checks and writes under the same lock: of two racing, exactly one wins.

The per-turn read (:meth:`SqliteProfiles.current_version`) is one primary-key lookup of the head
row on a reader connection of its own, run on the event loop: in WAL mode a reader does not wait
for a writer, and the lookup costs microseconds (about 4 us against 60 us handed to a thread,
``make bench`` scenario 12). The rare busy read (WAL recovery) is retried in a thread, never waited
for on the loop. It reads the
committed head every time (no cache of *which* version is current), so a write that returned is
seen by the next turn of every process on the file. Records are cached by version: immutable.
"""

from __future__ import annotations

import functools
import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from msev15.store.base import StoreUnavailable
from msev15.store.profiles import MAX_VERSIONS, ProfileRecord, RecordCache, VersionConflict, stored_copy
from msev15.store.sqlite_kit import SqliteFile

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS profile_heads (tenant_id TEXT PRIMARY KEY, current INTEGER NOT NULL, "
    "latest INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS profile_versions (tenant_id TEXT NOT NULL, version INTEGER NOT NULL, "
    "profile TEXT NOT NULL, updated_at REAL NOT NULL, updated_by TEXT NOT NULL, PRIMARY KEY (tenant_id, version))",
)
_HEAD = "SELECT current FROM profile_heads WHERE tenant_id = ?"
_CACHED_RECORDS = 1024
T = TypeVar("T")


class SqliteProfiles:
    def __init__(self, path: str | Path, *, max_versions: int = MAX_VERSIONS, busy_timeout: float = 10) -> None:
        self.path = Path(path)
        self.max_versions = max_versions
        self._file = SqliteFile(self.path, schema=_SCHEMA, busy_timeout=busy_timeout)
        self._db = self._file.db
        # The loop's own connection for the per-turn read: never behind the writers' lock, and no
        # busy wait (timeout 0): a busy read is retried in a thread instead.
        self._reader = sqlite3.connect(self.path, timeout=0, check_same_thread=False, isolation_level=None)
        self._records = RecordCache(_CACHED_RECORDS)

    # --- reads --------------------------------------------------------------------------------

    async def current_version(self, tenant_id: str) -> int:
        try:
            row = self._reader.execute(_HEAD, (tenant_id,)).fetchone()
        except sqlite3.OperationalError:
            # Busy (a WAL reader almost never is: while another connection recovers the WAL, or
            # opens a new file): never wait on the loop; wait in a thread, behind the busy timeout.
            row = await self._call(lambda: self._db.execute(_HEAD, (tenant_id,)).fetchone())
        return int(row[0]) if row else 0

    async def current(self, tenant_id: str) -> ProfileRecord | None:
        n = await self.current_version(tenant_id)
        return await self.version(tenant_id, n) if n else None

    async def version(self, tenant_id: str, n: int) -> ProfileRecord | None:
        cached = self._records.get(tenant_id, n)
        if cached is not None:
            return cached
        rows = await self._call(self._select, tenant_id, n)
        return self._remember(rows[0]) if rows else None

    async def versions(self, tenant_id: str) -> list[ProfileRecord]:
        rows = await self._call(self._select, tenant_id, None)
        return [self._remember(row) for row in rows]

    def _select(self, tenant_id: str, n: int | None) -> list[tuple[Any, ...]]:
        sql = "SELECT tenant_id, version, profile, updated_at, updated_by FROM profile_versions WHERE tenant_id = ?"
        if n is not None:
            return self._db.execute(sql + " AND version = ?", (tenant_id, n)).fetchall()
        return self._db.execute(sql + " ORDER BY version DESC", (tenant_id,)).fetchall()

    def _remember(self, row: tuple[Any, ...]) -> ProfileRecord:
        return self._records.remember(str(row[0]), int(row[1]), row[2], row[3], str(row[4]))

    # --- writes -------------------------------------------------------------------------------

    async def put(self, tenant_id: str, profile: dict[str, Any], by: str, *, if_version: int | None = None) -> int:
        text = json.dumps(stored_copy(profile), ensure_ascii=False)  # validated (ProfileInvalid) first
        return await self._call(self._write, tenant_id, text, by, if_version, None, atomic=True)

    async def rollback(self, tenant_id: str, n: int, by: str) -> int:
        return await self._call(self._write, tenant_id, None, by, None, n, atomic=True)

    async def delete(self, tenant_id: str, by: str) -> bool:
        return await self._call(self._delete, tenant_id)

    def _write(self, tenant_id: str, text: str | None, by: str, if_version: int | None, copy_of: int | None) -> int:
        """One new version, in the write transaction ``_call(..., atomic=True)`` opens."""
        db = self._db
        head = db.execute("SELECT current, latest FROM profile_heads WHERE tenant_id = ?", (tenant_id,)).fetchone()
        current, latest = (int(head[0]), int(head[1])) if head else (0, 0)
        if if_version is not None and if_version != current:
            raise VersionConflict(current)
        if copy_of is not None:
            row = db.execute("SELECT profile FROM profile_versions WHERE tenant_id = ? AND version = ?",
                             (tenant_id, copy_of)).fetchone()
            if row is None:
                raise LookupError(f"version {copy_of} is not kept")
            text = str(row[0])
        n = latest + 1
        db.execute("INSERT INTO profile_versions VALUES (?, ?, ?, ?, ?)", (tenant_id, n, text, time.time(), by))
        db.execute("INSERT INTO profile_heads VALUES (?, ?, ?) ON CONFLICT (tenant_id) DO UPDATE "
                   "SET current = excluded.current, latest = excluded.latest", (tenant_id, n, n))
        db.execute("DELETE FROM profile_versions WHERE tenant_id = ? AND version <= ?",
                   (tenant_id, n - self.max_versions))
        return n

    def _delete(self, tenant_id: str) -> bool:
        rows = self._db.execute("UPDATE profile_heads SET current = 0 WHERE tenant_id = ? AND current > 0 "
                                "RETURNING tenant_id", (tenant_id,)).fetchall()
        return bool(rows)

    async def _call(self, func: Callable[..., T], *args: Any, atomic: bool = False) -> T:
        run = self._file.run_atomic if atomic else self._file.run
        try:
            return await run(functools.partial(func, *args))
        except sqlite3.OperationalError as exc:  # disk full, read-only, locked past the busy timeout
            raise StoreUnavailable(f"the profile tables are unavailable: {exc}") from exc

    async def close(self) -> None:
        self._reader.close()
        self._file.close()
