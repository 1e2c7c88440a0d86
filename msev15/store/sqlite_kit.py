"""What the SQLite databases of the store share: the connection a store owns, opened in WAL mode
with a busy timeout, used under one lock, closed once.

Two owners, for the two ways a store talks to its file:

- :class:`AsyncSqlite`: an ``aiosqlite`` connection (its own thread), used from the event loop
  under an ``asyncio.Lock`` (the session database: sessions, pending calls, feedback).
- :class:`SqliteFile`: a ``sqlite3`` connection whose calls run in worker threads under a
  ``threading.Lock`` (the API keys file: keys and profiles; the handoff file).

Both write with ``BEGIN IMMEDIATE ... COMMIT`` (rolled back on anything raised, a cancellation
too), so writers in every process on the file take turns.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

import aiosqlite

from msev15.store.base import StoreUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")


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


class AsyncSqlite:
    """One aiosqlite connection (autocommit: transactions are explicit) and the lock its users
    take; after :meth:`close`, every use raises StoreUnavailable."""

    def __init__(self, db: aiosqlite.Connection, path: Path, what: str) -> None:
        self._db: aiosqlite.Connection | None = db
        self.path = path
        self.what = what  # for messages: "the session database"
        self.lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: str | Path, setup: Callable[[aiosqlite.Connection, Path], Awaitable[None]],
                   what: str = "the database") -> AsyncSqlite:
        """Create the folder, connect, then ``setup(db, path)`` (pragmas, WAL, tables); a failed
        set-up closes the connection. OSError / sqlite3.Error from the connect are the caller's."""
        db_path = Path(path).expanduser()
        db_path.parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(db_path, isolation_level=None)
        try:
            await setup(db, db_path)
        except BaseException:
            await db.close()
            raise
        return cls(db, db_path, what)

    @property
    def closed(self) -> bool:
        return self._db is None

    def connection(self) -> aiosqlite.Connection:
        if self._db is None:
            raise StoreUnavailable(f"{self.what} is closed")
        return self._db

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self.lock:
            yield self.connection()

    @asynccontextmanager
    async def writing(self) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction; anything raised inside (a cancellation too) rolls it back."""
        async with self.lock:
            db = self.connection()
            try:
                await db.execute_fetchall("BEGIN IMMEDIATE")
                yield db
                await db.execute_fetchall("COMMIT")
            except BaseException:
                await self._rollback(db)
                raise

    async def _rollback(self, db: aiosqlite.Connection) -> None:
        # Always queued, never skipped on db.in_transaction: after a cancellation the BEGIN may
        # still be waiting in aiosqlite's queue, and the ROLLBACK must run after it.
        try:
            await db.execute_fetchall("ROLLBACK")
        except sqlite3.OperationalError as exc:
            if "no transaction is active" not in str(exc):  # SQLite rolls back by itself after some errors
                log.warning("rollback of %s failed: %s", self.what, exc)
        except (sqlite3.Error, ValueError) as exc:
            log.warning("rollback of %s failed: %s", self.what, exc)

    async def close(self) -> None:
        """Close the connection; safe to call twice."""
        async with self.lock:
            db, self._db = self._db, None
        if db is not None:
            await db.close()


class SqliteFile:
    """One sqlite3 connection (WAL, busy timeout, autocommit) shared by worker threads: every use
    holds :attr:`lock`. ``schema``: statements run once at open (CREATE ... IF NOT EXISTS)."""

    def __init__(self, path: str | Path, *, schema: Iterable[str] = (), busy_timeout: float = 10) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=busy_timeout, check_same_thread=False, isolation_level=None)
        self.lock = threading.Lock()
        with self.lock:
            self.db.execute("PRAGMA journal_mode=WAL")
            for statement in schema:
                self.db.execute(statement)

    def locked(self, step: Callable[[], T]) -> T:
        """``step()`` holding the lock (reads, single statements)."""
        with self.lock:
            return step()

    def atomic(self, step: Callable[[], T]) -> T:
        """``step()`` inside one write transaction (other processes wait for it)."""
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                result = step()
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")
            return result

    async def run(self, step: Callable[[], T]) -> T:
        """:meth:`locked` in a worker thread."""
        return await asyncio.to_thread(self.locked, step)

    async def run_atomic(self, step: Callable[[], T]) -> T:
        """:meth:`atomic` in a worker thread."""
        return await asyncio.to_thread(self.atomic, step)

    def close(self) -> None:
        with self.lock:
            self.db.close()
