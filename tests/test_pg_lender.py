"""The PostgreSQL connection lender (msev15/store/pg_lender.py) against a real server: bounded,
first come first served, a connection reused only when it is known to be clean, failures reaching
the borrowers, idle connections closed, and a bounded close. Server-side facts (which backend
served, which are still connected) come from ``pg_backend_pid()`` and ``pg_stat_activity``."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from msev15.store.base import StoreUnavailable
from msev15.store.pg_kit import Database, lender
from msev15.store.pg_lender import Lender, LenderClosed, connector
from tests.pg_server import PgCluster, free_port


@pytest.fixture
async def url(pg_cluster: PgCluster) -> str:
    return pg_cluster.create_database("lender")


async def _backends(url: str) -> set[int]:
    """The backends connected to ``url``'s database, this probe's own excepted."""
    probe = await asyncpg.connect(url)
    try:
        rows = await probe.fetch("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                                 "AND pid <> pg_backend_pid()")
        return {int(r[0]) for r in rows}
    finally:
        await probe.close()


async def _until_no_backends(url: str) -> None:
    """A backend whose client said goodbye exits a moment later: wait for that, bounded."""
    deadline = asyncio.get_running_loop().time() + 10
    while await _backends(url) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.02)
    assert not await _backends(url)


async def _pid(database: Database) -> int:
    async with database.connection() as conn:
        return int(await conn.fetchval("SELECT pg_backend_pid()"))


async def test_at_most_max_size_connections_and_waiters_are_served_in_order(url: str) -> None:
    pool = lender(url, max_size=2)
    try:
        first, second = await pool.acquire(5), await pool.acquire(5)
        waiters = [asyncio.create_task(pool.acquire(5)) for _ in range(3)]
        await asyncio.sleep(0)  # each waiter queues (no connection is free, none may be opened)
        assert not any(w.done() for w in waiters)
        assert pool.stats() == {"open": 2, "idle": 0, "lent": 2, "waiting": 3}
        assert len(await _backends(url)) == 2
        pool.release(first)
        assert await waiters[0] is first  # the first waiter gets the returned connection itself
        assert not waiters[1].done() and not waiters[2].done()
        pool.release(second)
        assert await waiters[1] is second
        pool.release(first)
        assert await waiters[2] is first
        pool.release(second)
        pool.release(first)
        assert pool.stats() == {"open": 2, "idle": 2, "lent": 0, "waiting": 0}
    finally:
        await pool.close(5)
    await _until_no_backends(url)  # closed: nothing left on the server


async def test_a_borrower_gives_up_after_its_timeout_and_the_queue_goes_on(url: str) -> None:
    pool = lender(url, max_size=1)
    try:
        held = await pool.acquire(5)
        with pytest.raises(TimeoutError):
            await pool.acquire(0.05)
        later = asyncio.create_task(pool.acquire(5))
        await asyncio.sleep(0)
        pool.release(held)
        assert await later is held  # the one that gave up is not served, nor does it keep a place
        pool.release(held)
        assert pool.stats()["waiting"] == 0
    finally:
        await pool.close(5)


async def test_a_connection_handed_to_a_cancelled_waiter_goes_to_the_next(url: str) -> None:
    pool = lender(url, max_size=1)
    try:
        held = await pool.acquire(5)
        cancelled, next_one = asyncio.create_task(pool.acquire(5)), asyncio.create_task(pool.acquire(5))
        await asyncio.sleep(0)
        pool.release(held)  # handed to the first waiter...
        cancelled.cancel()  # ...which is cancelled before it runs
        assert await next_one is held
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        pool.release(held)
        assert pool.stats() == {"open": 1, "idle": 1, "lent": 0, "waiting": 0}
    finally:
        await pool.close(5)


async def test_a_connection_is_reused_after_an_error_postgresql_answered(url: str) -> None:
    database = Database(lender(url, max_size=1), url)
    try:
        before = await _pid(database)
        with pytest.raises(asyncpg.DivisionByZeroError):
            async with database.connection() as conn:
                await conn.fetchval("SELECT 1 / 0")
        with pytest.raises(asyncpg.UniqueViolationError):
            async with database.transaction() as conn:
                await conn.execute("CREATE TEMP TABLE t (k int PRIMARY KEY)")
                await conn.execute("INSERT INTO t VALUES (1), (1)")
        assert await _pid(database) == before
    finally:
        await database.close()


async def test_a_statement_cancelled_mid_flight_takes_its_connection_with_it(url: str) -> None:
    """The cancelled query may still run on the server: that connection is closed, not lent again."""
    database = Database(lender(url, max_size=1), url)
    try:
        before = await _pid(database)
        started = asyncio.Event()

        async def slow() -> None:
            async with database.connection() as conn:
                started.set()
                await conn.execute("SELECT pg_sleep(30)")

        task = asyncio.create_task(slow())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        after = await _pid(database)
        assert after != before
        # the old backend's statement was cancelled on the server: it is gone, not sleeping on
        deadline = asyncio.get_running_loop().time() + 10
        while await _backends(url) != {after} and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        assert await _backends(url) == {after}
    finally:
        await database.close()


async def test_a_transaction_left_open_is_not_lent_again(url: str) -> None:
    database = Database(lender(url, max_size=1), url)
    try:
        async with database.connection() as conn:
            before = int(await conn.fetchval("SELECT pg_backend_pid()"))
            await conn.execute("BEGIN")
            await conn.execute("CREATE TEMP TABLE left_open (k int)")
        async with database.connection() as conn:
            assert int(await conn.fetchval("SELECT pg_backend_pid()")) != before
            assert not await conn.fetchval("SELECT to_regclass('pg_temp.left_open') IS NOT NULL")
    finally:
        await database.close()


async def test_a_connection_the_server_dropped_while_idle_is_replaced(url: str) -> None:
    database = Database(lender(url, max_size=1), url)
    try:
        before = await _pid(database)
        probe = await asyncpg.connect(url)
        await probe.execute("SELECT pg_terminate_backend($1)", before)
        await probe.close()
        # asyncpg notices the closed socket when the loop reads it; the next borrow must not fail
        # for a reason it could have seen. It either gets a fresh connection, or (if the close is
        # not seen yet) fails once as unavailable; the one after that is a fresh connection.
        try:
            after = await _pid(database)
        except StoreUnavailable:
            after = await _pid(database)
        assert after != before
    finally:
        await database.close()


async def test_a_failed_connect_reaches_each_borrower_in_turn() -> None:
    """Nothing listens: every borrower gets the connect error itself, none waits out a timeout."""
    port = free_port()
    pool = Lender(connector(f"postgresql://postgres@127.0.0.1:{port}/none", connect_timeout=2, command_timeout=2),
                  max_size=1)
    results = await asyncio.gather(*(pool.acquire(30) for _ in range(4)), return_exceptions=True)
    assert all(isinstance(r, OSError) for r in results), results
    assert pool.stats() == {"open": 0, "idle": 0, "lent": 0, "waiting": 0}
    database = Database(pool, "postgresql://x")
    assert await database.status() == "unavailable"
    pool.terminate()


async def test_idle_connections_close_after_their_idle_time(url: str) -> None:
    pool = Lender(connector(url, connect_timeout=2, command_timeout=2), max_size=2, idle_seconds=0.05)
    try:
        first, second = await pool.acquire(5), await pool.acquire(5)
        pool.release(first)
        pool.release(second)
        assert len(await _backends(url)) == 2
        deadline = asyncio.get_running_loop().time() + 10
        while pool.stats()["open"] and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        assert pool.stats()["open"] == 0
        await _until_no_backends(url)
        again = await pool.acquire(5)  # and a borrower after that opens a new one
        assert await again.fetchval("SELECT 1") == 1
        pool.release(again)
    finally:
        await pool.close(5)


async def test_close_waits_for_a_lent_connection_then_refuses_borrowers(url: str) -> None:
    database = Database(lender(url, max_size=2), url)
    lent = await database.pool.acquire(5)
    closing = asyncio.create_task(database.close())
    await asyncio.sleep(0)
    assert not closing.done()  # the lent connection is not torn from its borrower
    assert await lent.fetchval("SELECT 1") == 1
    database.pool.release(lent)
    await closing
    assert lent.is_closed()
    with pytest.raises(LenderClosed):
        await database.pool.acquire(5)
    with pytest.raises(StoreUnavailable):
        async with database.connection():
            pass
    assert await database.status() == "unavailable"


async def test_close_terminates_what_is_not_returned_in_time(url: str) -> None:
    pool = lender(url, max_size=1)
    lent = await pool.acquire(5)
    await pool.close(0.05)
    assert lent.is_closed()
    pool.release(lent)  # returned late: nothing to do, nothing raised
    assert pool.stats() == {"open": 0, "idle": 0, "lent": 0, "waiting": 0}


async def test_a_connection_handed_over_as_close_begins_is_closed_with_the_rest(url: str) -> None:
    """Handed to a waiter that is cancelled after close() began: it counts as returned, so close
    ends once it is closed instead of waiting out its timeout (the wait below is only a hang guard)."""
    pool = lender(url, max_size=1)
    held = await pool.acquire(5)
    waiter = asyncio.create_task(pool.acquire(5))
    await asyncio.sleep(0)
    closing = asyncio.create_task(pool.close(60))  # runs first: it waits for the lent connection
    pool.release(held)  # handed to the waiter...
    waiter.cancel()  # ...which is cancelled before it runs
    await asyncio.wait_for(closing, 10)
    assert held.is_closed()
    with pytest.raises(asyncio.CancelledError):
        await waiter


async def test_a_borrower_cancelled_as_close_fails_it_sees_its_cancellation(url: str) -> None:
    """close() fails the waiters with LenderClosed; one cancelled in the same moment must end
    cancelled (asyncio.timeout and task groups rely on it), not with LenderClosed."""
    pool = lender(url, max_size=1)
    held = await pool.acquire(5)
    waiter = asyncio.create_task(pool.acquire(5))
    await asyncio.sleep(0)
    closing = asyncio.create_task(pool.close(5))
    await asyncio.sleep(0)  # close() has failed the waiter; the waiter has not run yet
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    pool.release(held)
    await closing
