"""The PendingCalls contract, over every implementation: memory, SQLite (a file, reopened), a
real Redis server and a real PostgreSQL (a fresh database per test, each opening its own pool).
Deciding and taking are atomic: of racing callers exactly one wins."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from msev15.store.pending import AlreadyDecided, MemoryPendingCalls, PausedTurn, PendingCalls, PendingNotFound
from msev15.store.pg_kit import Database, open_database
from msev15.store.pg_pending import PostgresPendingCalls
from msev15.store.redis_pending import RedisPendingCalls
from msev15.store.sqlite_pending import SqlitePendingCalls

Opener = Callable[[], Any]


def paused(session_id: str = "s1", turn_id: str = "turn-1", expires_at: float = 2000.0,
           waiting: tuple[str, ...] = ("c1", "c2")) -> PausedTurn:
    calls = [{"id": "c0", "name": "get_order_by_id", "arguments": '{"order_id": "ORD-1"}'},
             *({"id": cid, "name": "update_order_status", "arguments": "{}"} for cid in waiting)]
    return PausedTurn("t1", session_id, turn_id, "Cancel it", 1000.0, 1000.0, expires_at,
                      steps=[], text="On it.", streamed=["On it."], calls=calls,
                      results={"c0": {"ok": True, "content": "{}"}},
                      waiting=[{"call_id": cid, "kind": "approval"} for cid in waiting])


@pytest.fixture(params=["memory", "sqlite", "redis", "redis-cluster", "postgres"])
async def opener(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Opener]:
    """A function that opens the store (again: a second SQLite or Redis store sees the first's data)."""
    opened: list[PendingCalls] = []
    memory = MemoryPendingCalls()
    pools: list[Database] = []
    url = request.getfixturevalue("pg_cluster").create_database("pending") if request.param == "postgres" else ""

    async def open_store() -> PendingCalls:
        store: PendingCalls
        if request.param == "memory":
            store = memory
        elif request.param == "sqlite":
            store = await SqlitePendingCalls.open(tmp_path / "sessions.db")
        elif request.param == "postgres":
            pools.append(await open_database(url))
            store = PostgresPendingCalls(pools[-1])
        elif request.param == "redis":
            store = RedisPendingCalls.open(request.getfixturevalue("redis_url"))
        else:
            store = RedisPendingCalls.open(request.getfixturevalue("redis_cluster").url)
        opened.append(store)
        return store

    yield open_store
    for store in opened:
        await store.close()
    for pool in pools:
        await pool.close()


async def test_pause_get_and_an_empty_session(opener: Opener) -> None:
    store = await opener()
    assert await store.get("t1", "s1") is None
    await store.pause(paused())
    got = await store.get("t1", "s1")
    assert got is not None and got.turn_id == "turn-1" and got.remaining == 2
    assert got.calls == paused().calls and got.results == paused().results and got.decisions == {}
    assert await store.get("t2", "s1") is None  # another tenant's session of the same id


async def test_decide_counts_down_and_refuses_a_second_decision(opener: Opener) -> None:
    store = await opener()
    await store.pause(paused())
    assert not await store.decided("t1", "s1", "c2")
    assert await store.decide("t1", "s1", "c2", {"approve": True}) == 1
    assert await store.decided("t1", "s1", "c2")
    with pytest.raises(AlreadyDecided):
        await store.decide("t1", "s1", "c2", {"approve": False})
    assert await store.decide("t1", "s1", "c1", {"approve": False, "reason": "no"}) == 0
    got = await store.get("t1", "s1")
    assert got is not None and got.decisions == {"c2": {"approve": True}, "c1": {"approve": False, "reason": "no"}}
    assert got.undecided() == []


async def test_unknown_calls_are_not_found(opener: Opener) -> None:
    store = await opener()
    with pytest.raises(PendingNotFound):
        await store.decide("t1", "s1", "c1", {"approve": True})
    await store.pause(paused())
    for call_id in ("nope", "c0"):  # c0 ran already: it never waited
        with pytest.raises(PendingNotFound):
            await store.decide("t1", "s1", call_id, {"approve": True})


async def test_racing_deciders_of_one_call_exactly_one_wins(opener: Opener) -> None:
    store, other = await opener(), await opener()
    await store.pause(paused(waiting=("c1",)))
    outcomes = await asyncio.gather(*(s.decide("t1", "s1", "c1", {"approve": i % 2 == 0})
                                      for i, s in enumerate([store, other] * 4)), return_exceptions=True)
    assert outcomes.count(0) == 1
    assert all(isinstance(o, AlreadyDecided) for o in outcomes if o != 0)


async def test_racing_last_decisions_of_two_calls_one_sees_zero(opener: Opener) -> None:
    store, other = await opener(), await opener()
    await store.pause(paused())
    remaining = await asyncio.gather(store.decide("t1", "s1", "c1", {"approve": True}),
                                     other.decide("t1", "s1", "c2", {"approve": True}))
    assert sorted(remaining) == [0, 1]


async def test_take_is_one_winner_and_only_for_its_turn(opener: Opener) -> None:
    store, other = await opener(), await opener()
    await store.pause(paused())
    await store.decide("t1", "s1", "c1", {"approve": True})
    assert await store.take("t1", "s1", "another-turn") is None
    taken = await asyncio.gather(store.take("t1", "s1", "turn-1"), other.take("t1", "s1"))
    winners = [t for t in taken if t is not None]
    assert len(winners) == 1 and winners[0].decisions == {"c1": {"approve": True}}
    assert await store.get("t1", "s1") is None
    with pytest.raises(PendingNotFound):  # settled: nothing to decide any more
        await store.decide("t1", "s1", "c2", {"approve": True})
    with pytest.raises(AlreadyDecided):  # a late second decider of a decided call
        await other.decide("t1", "s1", "c1", {"approve": False})
    assert await other.decided("t1", "s1", "c1") and not await other.decided("t1", "s1", "c2")


async def test_a_new_pause_replaces_the_settled_one_with_fresh_decisions(opener: Opener) -> None:
    store = await opener()
    await store.pause(paused())
    await store.decide("t1", "s1", "c1", {"approve": True})
    await store.pause(paused(turn_id="turn-2"))
    got = await store.get("t1", "s1")
    assert got is not None and got.turn_id == "turn-2" and got.decisions == {}


async def test_due_lists_what_expired(opener: Opener) -> None:
    store = await opener()
    await store.pause(paused("s1", "turn-1", expires_at=2000.0))
    await store.pause(paused("s2", "turn-2", expires_at=3000.0))
    assert await store.due(1999.0) == []
    assert await store.due(2500.0) == [("t1", "s1", "turn-1")]
    assert sorted(await store.due(3000.0)) == [("t1", "s1", "turn-1"), ("t1", "s2", "turn-2")]
    await store.take("t1", "s1")
    assert await store.due(3000.0) == [("t1", "s2", "turn-2")]


async def test_a_reopened_store_keeps_paused_steps_and_decisions(opener: Opener) -> None:
    store = await opener()
    await store.pause(paused())
    await store.decide("t1", "s1", "c1", {"approve": False, "reason": "no"})
    again = await opener()
    got = await again.get("t1", "s1")
    assert got is not None and got.decisions == {"c1": {"approve": False, "reason": "no"}}


async def test_stalled_lists_fully_decided_steps_that_nobody_took(opener: Opener) -> None:
    store = await opener()
    await store.pause(paused())
    await store.decide("t1", "s1", "c1", {"approve": True, "decided_at": 1500.0})
    assert await store.stalled(5000.0) == []  # one call still waits
    await store.decide("t1", "s1", "c2", {"approve": False, "decided_at": 1600.0})
    assert await store.stalled(1600.0) == []  # the last decision is not older than that
    assert await store.stalled(1601.0) == [("t1", "s1", "turn-1")]
    await store.take("t1", "s1")
    assert await store.stalled(5000.0) == []
