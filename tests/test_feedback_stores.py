"""The feedback store contract, run against every implementation (memory, sqlite, redis, postgres)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from msev15.store.feedback import CompletedTurn, Feedback, FeedbackStore, MemoryFeedback
from msev15.store.pg_feedback import PostgresFeedback
from msev15.store.pg_kit import Database, open_database
from msev15.store.redis_feedback import RedisFeedback
from msev15.store.sqlite_feedback import SqliteFeedback

KINDS = ["memory", "sqlite", "redis", "redis-cluster", "postgres"]

OpenStore = Callable[..., Awaitable[FeedbackStore]]


@pytest.fixture(params=KINDS)
async def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[OpenStore]:
    """``await open_store(max_per_tenant=…, path=…)``; a second call on the same path (sqlite) or
    server (redis) sees what the first one wrote, as another instance or a restart would."""
    kind = request.param
    opened: list[FeedbackStore] = []
    redis_url = {"redis": lambda: request.getfixturevalue("redis_url"),
                 "redis-cluster": lambda: request.getfixturevalue("redis_cluster").url}.get(kind, str)()
    database_url = request.getfixturevalue("pg_cluster").create_database("feedback") if kind == "postgres" else ""
    pools: list[Database] = []

    async def open_(max_per_tenant: int = 100_000, ttl: float = 3600) -> FeedbackStore:
        store: FeedbackStore
        if kind == "memory":
            store = MemoryFeedback(ttl, max_per_tenant=max_per_tenant)
        elif kind == "sqlite":
            store = await SqliteFeedback.open(tmp_path / "sessions.db", session_ttl_seconds=ttl,
                                              max_per_tenant=max_per_tenant)
        elif kind == "postgres":
            pools.append(await open_database(database_url))
            store = PostgresFeedback(pools[-1], session_ttl_seconds=ttl, max_per_tenant=max_per_tenant)
        else:
            store = RedisFeedback(redis_url, session_ttl_seconds=ttl, max_per_tenant=max_per_tenant)
        opened.append(store)
        return store

    yield open_
    for store in opened:
        await store.close()
    for pool in pools:
        await pool.close()


def _rating(turn: str, rating: str = "up", *, tenant: str = "acme", caller: str = "anonymous",
            comment: str | None = None, at: float | None = None) -> Feedback:
    return Feedback(tenant, "s1", turn, caller, rating, comment, time.time() if at is None else at)  # type: ignore[arg-type]


async def test_known_only_for_remembered_turns_of_that_tenant_and_session(open_store: OpenStore) -> None:
    store = await open_store()
    assert not await store.known("acme", "s1", "t1")
    now = time.time()
    await store.remember([CompletedTurn("acme", "s1", "t1", now), CompletedTurn("acme", "s2", "t2", now)])
    assert await store.known("acme", "s1", "t1")
    assert not await store.known("other", "s1", "t1"), "another tenant's turn"
    assert not await store.known("acme", "s2", "t1"), "another session's turn"
    assert await store.known("acme", "s2", "t2")


async def test_turns_older_than_the_session_lifetime_are_not_known(open_store: OpenStore) -> None:
    store = await open_store(ttl=3600)
    await store.remember([CompletedTurn("acme", "s1", "old", time.time() - 7200)])
    if isinstance(store, RedisFeedback):
        # Redis keeps a session's turn ids in one set that expires with the session (each completed
        # turn renews it, as each turn renews the session).
        from msev15.store.redis_kit import tenant_key

        assert 0 < await store._redis.ttl(tenant_key("acme", "fbturns", "s1")) <= 3600
        return
    assert not await store.known("acme", "s1", "old")


async def test_rate_then_replace_by_the_same_caller(open_store: OpenStore) -> None:
    store = await open_store()
    assert await store.rate(_rating("t1", "up", comment="great", at=1000.0)) is False
    assert await store.rate(_rating("t1", "down", comment=None, at=1001.0)) is True
    assert await store.rate(_rating("t1", "up", caller="key-2", at=1002.0)) is False, "another caller: a new rating"
    listed = await store.list("acme")
    assert [(f.caller, f.rating, f.comment, f.created_at) for f in listed] == [
        ("key-2", "up", None, 1002.0), ("anonymous", "down", None, 1001.0)]


async def test_list_is_per_tenant_newest_first_with_filters(open_store: OpenStore) -> None:
    store = await open_store()
    for i, rating in enumerate(["up", "down", "up", "down", "up"]):
        await store.rate(_rating(f"t{i}", rating, at=1000.0 + i))
    await store.rate(_rating("x", "down", tenant="other", at=2000.0))
    assert [f.turn_id for f in await store.list("acme")] == ["t4", "t3", "t2", "t1", "t0"]
    assert [f.turn_id for f in await store.list("acme", rating="down")] == ["t3", "t1"]
    assert [f.turn_id for f in await store.list("acme", since=1002.0)] == ["t4", "t3", "t2"]
    assert [f.turn_id for f in await store.list("acme", rating="up", limit=2)] == ["t4", "t2"]
    assert [f.turn_id for f in await store.list("other")] == ["x"]
    assert await store.list("nobody") == []


async def test_ratings_per_tenant_are_capped_oldest_first(open_store: OpenStore) -> None:
    store = await open_store(max_per_tenant=3)
    for i in range(5):
        await store.rate(_rating(f"t{i}", at=1000.0 + i))
    assert [f.turn_id for f in await store.list("acme")] == ["t4", "t3", "t2"]


async def test_ratings_outlive_the_store_object(open_store: OpenStore) -> None:
    """What another instance (redis) or a restart (sqlite) sees; memory keeps nothing across."""
    first = await open_store()
    await first.remember([CompletedTurn("acme", "s1", "t1", time.time())])
    await first.rate(_rating("t1", "down", comment="wrong order", at=1000.0))
    second = await open_store()
    if isinstance(second, MemoryFeedback):
        assert await second.list("acme") == []
        return
    assert await second.known("acme", "s1", "t1")
    assert [(f.rating, f.comment) for f in await second.list("acme")] == [("down", "wrong order")]


async def test_forget_drops_only_that_sessions_ratings_and_turns(open_store: OpenStore) -> None:
    store = await open_store()
    now = time.time()
    await store.remember([CompletedTurn("acme", "s1", "t1", now), CompletedTurn("acme", "s2", "t2", now),
                          CompletedTurn("other", "s1", "t3", now)])
    await store.rate(Feedback("acme", "s1", "t1", "anonymous", "down", "my address is 1 Main St", 1000.0))
    await store.rate(Feedback("acme", "s2", "t2", "anonymous", "up", None, 1001.0))
    await store.rate(Feedback("other", "s1", "t3", "anonymous", "up", None, 1002.0))
    await store.forget("acme", "s1")
    assert not await store.known("acme", "s1", "t1")
    assert await store.known("acme", "s2", "t2") and await store.known("other", "s1", "t3")
    assert [f.turn_id for f in await store.list("acme")] == ["t2"]
    assert [f.turn_id for f in await store.list("other")] == ["t3"]
