"""The handoff records contract, on every implementation (memory, SQLite, Redis, PostgreSQL),
including the one rule operators race on: of concurrent claims exactly one wins, also from two
stores sharing one SQLite file, one Redis or one PostgreSQL database (two instances)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from msev15.store.handoffs import Handoffs, MemoryHandoffs
from msev15.store.pg_handoffs import PostgresHandoffs
from msev15.store.pg_kit import Database, open_database
from msev15.store.redis_handoffs import RedisHandoffs
from msev15.store.sqlite_handoffs import SqliteHandoffs, path_beside

Opener = Callable[[], Handoffs]


@pytest.fixture(params=["memory", "sqlite", "redis", "redis-cluster", "postgres"])
async def opener(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Opener]:
    """``opener()`` -> another handle on the same records (another instance, for sqlite and redis)."""
    opened: list[Handoffs] = []
    memory = MemoryHandoffs()
    url = {"redis": lambda: request.getfixturevalue("redis_url"),
           "redis-cluster": lambda: request.getfixturevalue("redis_cluster").url}.get(request.param, str)()
    pools: list[Database] = []
    if request.param == "postgres":  # two pools on one fresh database: two instances
        database_url = request.getfixturevalue("pg_cluster").create_database("handoffs")
        pools += [await open_database(database_url), await open_database(database_url)]

    def open_() -> Handoffs:
        store: Handoffs
        if request.param == "memory":
            store = memory
        elif request.param == "sqlite":
            store = SqliteHandoffs(path_beside(tmp_path / "sessions.db"))
        elif request.param == "postgres":
            store = PostgresHandoffs(pools[len(opened) % 2])
        else:
            store = RedisHandoffs(url)
        opened.append(store)
        return store

    yield open_
    for store in opened:
        await store.close()
    for pool in pools:
        await pool.close()


async def test_request_list_claim_end(opener: Opener) -> None:
    T = time.time() - 1000  # record times are wall-clock: ended ones are kept a day
    store = opener()
    first = await store.request("acme", "s1", "asked for a person", "refund", T + 100)
    assert (first.status, first.reason, first.summary, first.requested_at) == ("waiting", "asked for a person",
                                                                               "refund", T + 100)
    await store.request("acme", "s0", "r0", "", T + 90)
    await store.request("globex", "s1", "other tenant", "", T + 95)
    again = await store.request("acme", "s1", "asked twice", "", T + 110)  # a live record stays as it is
    assert again == first
    assert [r.session_id for r in await store.list("acme", "waiting")] == ["s0", "s1"]  # oldest first
    assert await store.list("acme", "active") == []

    outcome, record = await store.claim("acme", "s1", "key-a", "Alice", T + 120)
    assert outcome == "claimed" and (record.status, record.claimed_by, record.claimed_by_name, record.claimed_at) == (
        "active", "key-a", "Alice", T + 120)
    assert record.requested_at == T + 100 and record.reason == "asked for a person"
    outcome, record = await store.claim("acme", "s1", "key-a", "Alice", T + 130)  # the holder again: fine
    assert outcome == "claimed" and record.claimed_at == T + 120
    outcome, record = await store.claim("acme", "s1", "key-b", "Bob", T + 130)
    assert outcome == "already_claimed" and record.claimed_by == "key-a"
    assert [r.session_id for r in await store.list("acme", "active")] == ["s1"]
    assert (await store.get("globex", "s1")).status == "waiting"  # type: ignore[union-attr]

    assert await store.end("acme", "s1", "released", T + 140, expect="waiting") is None  # it is active
    ended = await store.end("acme", "s1", "released", T + 140)
    assert ended is not None and (ended.status, ended.ended_at, ended.claimed_by) == ("released", T + 140, "key-a")
    assert await store.end("acme", "s1", "ticketed", T + 150) is None  # ended already
    assert {r.session_id: r.status for r in await store.list("acme", "all")} == {"s0": "waiting", "s1": "released"}

    # A new request after the end starts a new record; an operator may take a session nobody asked about.
    assert (await store.request("acme", "s1", "again", "", T + 160)).status == "waiting"
    outcome, record = await store.claim("acme", "s9", "key-b", "Bob", T + 170)
    assert outcome == "claimed" and record.status == "active" and record.requested_at == T + 170
    assert await store.get("acme", "nope") is None


async def test_concurrent_claims_have_exactly_one_winner(opener: Opener) -> None:
    stores = [opener() for _ in range(4)]  # for sqlite and redis: four instances on one file / server
    for round_ in range(5):
        session = f"s{round_}"
        await stores[0].request("acme", session, "asked for a person", "", 100.0)
        results = await asyncio.gather(*(s.claim("acme", session, f"op-{i}", f"Op {i}", 110.0)
                                         for i, s in enumerate(stores)))
        winners = [r for outcome, r in results if outcome == "claimed"]
        assert len(winners) == 1, results
        holder = winners[0].claimed_by
        assert all(r.claimed_by == holder for _, r in results)
        assert (await stores[1].get("acme", session)).claimed_by == holder  # type: ignore[union-attr]


async def test_ticketing_only_a_waiting_record_happens_once(opener: Opener) -> None:
    stores = [opener() for _ in range(3)]
    await stores[0].request("acme", "s1", "r", "", 100.0)
    results = await asyncio.gather(*(s.end("acme", "s1", "ticketed", 400.0, expect="waiting") for s in stores))
    assert sum(r is not None for r in results) == 1


async def test_the_timeout_is_taken_once_and_taken_over_once_its_lease_lapses(opener: Opener) -> None:
    stores = [opener() for _ in range(3)]
    a = stores[0]
    await a.request("acme", "s1", "r", "", 100.0)
    assert await a.take_timeout("acme", "s1", "early", 110.0, 120.0, before=100.0) is None  # not overdue yet
    taken = await asyncio.gather(*(s.take_timeout("acme", "s1", f"i{n}", 150.0, 160.0, before=120.0)
                                   for n, s in enumerate(stores)))
    [first] = [r for r in taken if r is not None]
    assert (first.status, first.ended_at, first.lease_until) == ("ticketed", 150.0, 160.0)
    owner = first.lease_owner
    assert owner in ("i0", "i1", "i2")
    assert await a.unsettled(155.0) == []  # the owner's lease holds
    assert await a.claim("acme", "s2", "op", "Op", 150.0)  # another session's record is no candidate
    [lapsed] = await stores[1].unsettled(165.0)
    assert (lapsed.session_id, lapsed.lease_owner) == ("s1", owner)

    again = await asyncio.gather(*(s.take_timeout("acme", "s1", f"j{n}", 165.0, 175.0, before=145.0)
                                   for n, s in enumerate(stores)))
    [second] = [r for r in again if r is not None]
    assert second.lease_owner in ("j0", "j1", "j2") and second.ended_at == 150.0 and second.lease_until == 175.0
    assert not await a.settle_timeout("acme", "s1", owner or "")  # the dead owner's lease is gone
    assert await stores[2].settle_timeout("acme", "s1", second.lease_owner or "")
    settled = await a.get("acme", "s1")
    assert settled is not None and settled.status == "ticketed" and settled.lease_owner is None
    assert await a.unsettled(10_000.0) == []
    assert await a.take_timeout("acme", "s1", "late", 10_000.0, 10_010.0, before=9_000.0) is None
    assert not await a.settle_timeout("acme", "s1", second.lease_owner or "")  # once


async def test_a_sqlite_file_from_before_the_lease_gets_its_columns(tmp_path: Path) -> None:
    import sqlite3

    path = path_beside(tmp_path / "sessions.db")
    with sqlite3.connect(path) as db:  # the first release's table
        db.execute("CREATE TABLE handoffs (tenant TEXT NOT NULL, session_id TEXT NOT NULL, status TEXT NOT NULL, "
                   "reason TEXT NOT NULL, summary TEXT NOT NULL, requested_at REAL NOT NULL, claimed_by TEXT, "
                   "claimed_by_name TEXT, claimed_at REAL, ended_at REAL, PRIMARY KEY (tenant, session_id)) "
                   "WITHOUT ROWID")
        db.execute("INSERT INTO handoffs VALUES ('acme', 's1', 'waiting', 'r', '', 100.0, NULL, NULL, NULL, NULL)")
    store = SqliteHandoffs(path)
    try:
        taken = await store.take_timeout("acme", "s1", "me", 150.0, 160.0, before=120.0)
        assert taken is not None and (taken.status, taken.lease_owner) == ("ticketed", "me")
        assert await store.settle_timeout("acme", "s1", "me")
    finally:
        await store.close()


async def test_forget_drops_only_that_sessions_record(opener: Opener) -> None:
    a, b = opener(), opener()
    await a.request("acme", "s1", "r", "", 100.0)
    await a.request("acme", "s2", "r", "", 100.0)
    await a.take_timeout("acme", "s2", "me", 150.0, 160.0, before=120.0)
    await b.forget("acme", "s2")
    await b.forget("acme", "s1")
    await b.forget("acme", "never")
    assert await a.get("acme", "s1") is None and await a.get("acme", "s2") is None
    assert await a.list("acme", "all") == [] and await a.overdue(10_000.0) == []
    assert await a.unsettled(10_000.0) == []
