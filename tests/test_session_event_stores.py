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


async def _watch(log: SessionEvents, *sessions: tuple[str, str]) -> None:
    """A reader looks at each session ("from now on"): its turns' events are kept from here."""
    for tenant, session in sessions:
        assert await log.last_id(tenant, session) == 0


async def test_a_burst_keeps_its_order_per_session(log: SessionEvents) -> None:
    await _watch(log, ("t1", "a"), ("t1", "b"), ("t2", "a"))
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
    await _watch(log, ("t1", "s"))
    first = await log.append("t1", "s", {"type": "x", "n": 0})
    log.publish("t1", "s", {"type": "x", "n": 1})
    log.publish("t1", "s", {"type": "x", "n": 2})
    third = await log.append("t1", "s", {"type": "x", "n": 3})
    assert (first, third) == (1, 4)
    assert await _all(log, "t1", "s", after=2) == [(3, 2), (4, 3)]
    appended = await asyncio.gather(*(log.append("t1", "s", {"type": "x", "n": 10 + i}) for i in range(5)))
    assert appended == [5, 6, 7, 8, 9]


async def test_turn_events_of_an_unwatched_session_are_dropped_what_people_write_is_kept(log: SessionEvents) -> None:
    log.publish("t1", "quiet", {"type": "token", "n": 0})  # nobody watches: dropped
    kept = await log.append("t1", "quiet", {"type": "human_message", "n": 1})
    assert await _all(log, "t1", "quiet") == [(kept, 1)]
    log.publish("t1", "quiet", {"type": "token", "n": 2})  # the read above watches it now
    assert [(seq, e["n"]) for seq, e in await log.read("t1", "quiet", kept, 10)] == [(kept + 1, 2)]


async def test_forget_in_a_burst_comes_after_what_was_published_before_it(log: SessionEvents) -> None:
    await _watch(log, ("t1", "gone"), ("t1", "stays"))
    for n in range(5):  # one tick: publishes, the forget and a neighbour's events share a batch
        log.publish("t1", "gone", {"type": "token", "n": n})
        log.publish("t1", "stays", {"type": "token", "n": n})
    await log.forget("t1", "gone", {"type": "session_deleted", "n": "end"})
    assert await _all(log, "t1", "gone") == [(6, "end")]  # its id follows the forgotten ones
    assert [n for _, n in await _all(log, "t1", "stays")] == list(range(5))
    await log.forget("t1", "stays")
    assert await _all(log, "t1", "stays") == []


async def test_redis_an_unwatched_turn_still_renews_the_session_s_keys(redis_url: str) -> None:
    """Nobody watching: a turn's events are neither encoded nor sent, yet they renew the stream's
    retention and the id counter's life as a write would, so ids never restart under a reader
    that comes back while the session is in use."""
    import redis.asyncio as aioredis

    from msev15.store.redis_session_events import COUNTER_TTL_SECONDS, _keys

    store = RedisSessionEvents(redis_url, 300)
    store.start()
    direct = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        assert await store.append("t1", "s", {"type": "note", "n": 1}) == 1
        stream, counter, flag = _keys("t1", "s")
        await direct.delete(flag)  # the reader left
        await direct.expire(stream, 5)
        await direct.expire(counter, 5)
        store.publish("t1", "s", {"type": "token", "n": 2})
        assert await store.append("t1", "other", {"type": "note", "n": 0}) == 1  # queued after the token
        assert 5 < await direct.ttl(stream) <= 300 and 300 < await direct.ttl(counter) <= COUNTER_TTL_SECONDS
        assert await direct.xlen(stream) == 1  # the token was not kept
        assert await store.append("t1", "s", {"type": "note", "n": 3}) == 2  # ids go on
    finally:
        await direct.aclose()
        await store.close()
