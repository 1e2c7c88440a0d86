"""What the SQLite databases of the store share (orders, sessions)."""

from __future__ import annotations

import asyncio
import sqlite3

import aiosqlite


async def enable_wal(db: aiosqlite.Connection, busy_timeout_ms: int) -> str:
    """Switch to WAL; the journal mode SQLite reports. Switching a new file needs an exclusive lock,
    and SQLite answers "database is locked" at once (without the busy handler) when another
    connection is opening it too: retry, bounded by the busy timeout."""
    delay, waited = 0.005, 0.0
    while True:
        try:
            return str(next(iter(await db.execute_fetchall("PRAGMA journal_mode = WAL")))[0])
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or waited >= busy_timeout_ms / 1000:
                raise
        await asyncio.sleep(delay)
        waited += delay
        delay = min(delay * 2, 0.2)
