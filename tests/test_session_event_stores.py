"""The session stream's log, the same contract over memory, Redis and a Redis Cluster: events get increasing ids in
publish order per session, ``append`` answers the id its event got after everything published
before it, and a reader after an id gets exactly the later events. The Redis writer sends a
burst in one pipeline (one script per session); the burst here mixes two sessions and two tenants."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from msev15.store.redis_session_events import RedisSessionEvents
from msev15.store.session_events import MemorySessionEvents, SessionEvents


@pytest.fixture(params=["memory", "redis", "redis-cluster"])
async def log(request: pytest.FixtureRequest) -> AsyncIterator[SessionEvents]:
    store: SessionEvents
    if request.param == "memory":
        store = MemorySessionEvents(300)
    elif request.param == "redis":
        store = RedisSessionEvents(request.getfixturevalue("redis_url"), 300)
    else:
        store = RedisSessionEvents(request.getfixturevalue("redis_cluster").url, 300)
    store.start()
    try:
        yield store
    finally:
        await store.close()


async def _all(log: SessionEvents, tenant: str, session: str, after: int = 0) -> list[tuple[int, Any]]:
    return [(seq, event["n"]) for seq, event in await log.read(tenant, session, after, 0.01)]


async def test_a_burst_keeps_its_order_per_session(log: SessionEvents) -> None:
    for n in range(60):  # one tick: the Redis writer takes them as one batch
        log.publish("t1", "a" if n % 3 else "b", {"type": "token", "n": n})
        log.publish("t2", "a", {"type": "token", "n": 1000 + n})
    last = await log.append("t1", "a", {"type": "done", "n": "end"})
    a = await _all(log, "t1", "a")
    assert [n for _, n in a] == [n for n in range(60) if n % 3] + ["end"]
    assert [seq for seq, _ in a] == list(range(1, len(a) + 1))
    assert last == a[-1][0] == await log.last_id("t1", "a")
    assert [n for _, n in await _all(log, "t1", "b")] == [n for n in range(60) if n % 3 == 0]
    assert [n for _, n in await _all(log, "t2", "a")] == [1000 + n for n in range(60)]  # tenants apart


async def test_ids_keep_increasing_across_batches_and_a_reader_gets_only_later_events(log: SessionEvents) -> None:
    first = await log.append("t1", "s", {"type": "x", "n": 0})
    log.publish("t1", "s", {"type": "x", "n": 1})
    log.publish("t1", "s", {"type": "x", "n": 2})
    third = await log.append("t1", "s", {"type": "x", "n": 3})
    assert (first, third) == (1, 4)
    assert await _all(log, "t1", "s", after=2) == [(3, 2), (4, 3)]
    appended = await asyncio.gather(*(log.append("t1", "s", {"type": "x", "n": 10 + i}) for i in range(5)))
    assert appended == [5, 6, 7, 8, 9]
