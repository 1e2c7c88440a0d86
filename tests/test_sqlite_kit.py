"""The SQLite connection owners every SQLite store uses (msev15/store/sqlite_kit.py), on real files:
WAL and the busy timeout at open, a write transaction rolled back by anything raised in it (a
cancellation too), and a closed owner refusing further use with StoreUnavailable."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import aiosqlite
import pytest

from msev15.store.base import StoreUnavailable
from msev15.store.sqlite_kit import AsyncSqlite, SqliteFile, enable_wal

TABLE = "CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY)"


async def _setup(db: aiosqlite.Connection, _: Path) -> None:
    await db.execute_fetchall("PRAGMA busy_timeout = 5000")
    await enable_wal(db, 5000)
    await db.execute_fetchall(TABLE)


def _rows(path: Path) -> list[str]:
    with sqlite3.connect(path) as other:  # another connection: what is committed
        return [str(r[0]) for r in other.execute("SELECT k FROM t ORDER BY k")]


async def test_async_owner_commits_rolls_back_and_closes(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "a.db"
    owner = await AsyncSqlite.open(path, _setup, "the test database")
    async with owner.reading() as db:
        assert [r[0] for r in await db.execute_fetchall("PRAGMA journal_mode")] == ["wal"]
    async with owner.writing() as db:
        await db.execute_fetchall("INSERT INTO t VALUES ('kept')")
    with pytest.raises(RuntimeError):
        async with owner.writing() as db:
            await db.execute_fetchall("INSERT INTO t VALUES ('lost')")
            raise RuntimeError("the step failed")

    inserted = asyncio.Event()

    async def cancelled_write() -> None:
        async with owner.writing() as db:
            await db.execute_fetchall("INSERT INTO t VALUES ('cancelled')")
            inserted.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(cancelled_write())
    await asyncio.wait({task, asyncio.create_task(inserted.wait())}, return_when=asyncio.FIRST_COMPLETED)
    assert inserted.is_set() and not task.done(), task  # the insert ran inside the open transaction
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert _rows(path) == ["kept"]
    await owner.close()
    await owner.close()  # twice is fine
    assert owner.closed
    with pytest.raises(StoreUnavailable, match="the test database is closed"):
        async with owner.reading():
            pass
    with pytest.raises(StoreUnavailable):
        async with owner.writing():
            pass


async def test_async_owner_closes_the_connection_when_the_setup_fails(tmp_path: Path) -> None:
    async def broken(db: aiosqlite.Connection, _: Path) -> None:
        await db.execute_fetchall("CREATE TABLE nonsense (")

    with pytest.raises(sqlite3.OperationalError):
        await AsyncSqlite.open(tmp_path / "b.db", broken)


async def test_file_owner_commits_rolls_back_and_closes(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "f.db"
    owner = SqliteFile(path, schema=(TABLE,), busy_timeout=5)
    assert owner.locked(lambda: owner.db.execute("PRAGMA journal_mode").fetchone()[0]) == "wal"
    assert owner.db.execute("PRAGMA busy_timeout").fetchone()[0] == 5000
    await owner.run_atomic(lambda: owner.db.execute("INSERT INTO t VALUES ('kept')"))

    def failing() -> None:
        owner.db.execute("INSERT INTO t VALUES ('lost')")
        raise LookupError("the step failed")

    with pytest.raises(LookupError):
        await owner.run_atomic(failing)
    assert await owner.run(lambda: owner.db.execute("SELECT count(*) FROM t").fetchone()[0]) == 1
    assert _rows(path) == ["kept"]
    owner.close()
    with pytest.raises(sqlite3.ProgrammingError):
        await owner.run(lambda: owner.db.execute("SELECT 1"))
