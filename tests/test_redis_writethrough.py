"""The shared turn log's write-through rule, on a real redis-server: no reader sees an event before
the turn's Redis stream holds it, a retried write never duplicates, and a turn another instance
declared lost shows that one end on its owner too."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from msev15.events.redis_turnlog import RedisTurnLog, RemoteTurnRecord, decode_event, encode_event
from msev15.events.redis_writethrough import EVENTS_SCRIPT, SharedTurnRecord
from msev15.events.types import Token, TurnCompleted, TurnFailed, TurnRequested
from msev15.store.redis_kit import tenant_key
from tests.redis_server import RedisServer


def _turn(turn_id: str) -> TurnRequested:
    return TurnRequested(turn_id, "t", "s", "req", "hello", True)


def _token(turn_id: str, text: str) -> Token:
    return Token(turn_id, "t", "s", "req", text)


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
async def owner(redis_url: str) -> AsyncIterator[RedisTurnLog]:
    log = RedisTurnLog(redis_url, "owner", 300, 10_000)
    log.start()
    yield log
    await log.close()


async def _stream(client: aioredis.Redis, turn_id: str) -> list[tuple[str, str]]:
    entries = await client.xrange(tenant_key("t", "turnlog", turn_id)) or []
    turn = SharedTurnRecord(_turn(turn_id))
    decoded = [(str(entry_id), decode_event(str((fields or {})["e"]), turn)) for entry_id, fields in entries]
    assert all(event.turn_id == turn_id and event.session_id == "s" for _, event in decoded)
    return [(entry_id, type(event).__name__) for entry_id, event in decoded]


async def test_a_reader_sees_an_event_only_once_redis_has_it(owner: RedisTurnLog, client: aioredis.Redis) -> None:
    record = owner.open(_turn("t1"))
    owner.started(record)
    assert owner.append(record, _token("t1", "a")) == 1
    assert owner.append(record, _token("t1", "b")) == 2
    assert record.last_seq == 0  # queued for Redis, not yet visible to anyone
    await record.wait(0)
    assert record.last_seq == 2  # the burst went out in one write and was released together
    assert await _stream(client, "t1") == [("1-0", "Token"), ("2-0", "Token")]
    owner.append(record, TurnCompleted("t1", "t", "s", "req", "ab", 2))
    assert not record.finished
    outcome = await record.outcome()
    assert isinstance(outcome, TurnCompleted)
    meta = await client.hgetall(tenant_key("t", "turn", "t1"))
    assert meta["status"] == "completed" and meta["last_seq"] == "3"  # the end was stored before it was shown
    assert [e for _, e in await _stream(client, "t1")] == ["Token", "Token", "TurnCompleted"]


async def test_a_retried_write_adds_each_event_once(owner: RedisTurnLog, client: aioredis.Redis) -> None:
    record = owner.open(_turn("t2"))
    await owner.flush(5)
    # An earlier attempt that the client gave up on (Redis stalled) ran later and stored seq 1.
    meta, stream = tenant_key("t", "turn", "t2"), tenant_key("t", "turnlog", "t2")
    first = _token("t2", "a")
    assert await client.eval(EVENTS_SCRIPT, 2, meta, stream, 1, "", "", "", "", 300, 86400, 20000,
                             encode_event(first)) == 1
    owner.append(record, first)
    owner.append(record, _token("t2", "b"))
    owner.append(record, TurnCompleted("t2", "t", "s", "req", "ab", 2))
    await record.outcome()
    assert await _stream(client, "t2") == [("1-0", "Token"), ("2-0", "Token"), ("3-0", "TurnCompleted")]
    assert [type(e).__name__ for e in record.events] == ["Token", "Token", "TurnCompleted"]


async def test_a_turn_declared_lost_elsewhere_ends_with_that_one_event(owner: RedisTurnLog, redis_url: str,
                                                                      client: aioredis.Redis) -> None:
    record = owner.open(_turn("t3"))
    owner.append(record, _token("t3", "a"))
    await record.wait(0)
    other = RedisTurnLog(redis_url, "other", 300, 10_000)
    try:
        # The owner has no heartbeat here (as if paused past its lease): finding the turn ends it.
        remote = await other.find("t", "s", "t3")
        assert isinstance(remote, RemoteTurnRecord) and remote.error == "turn_lost"
    finally:
        await other.close()
    owner.append(record, _token("t3", "late"))  # refused by the shared log
    owner.append(record, TurnCompleted("t3", "t", "s", "req", "a late", 2))
    outcome = await record.outcome()
    assert isinstance(outcome, TurnFailed) and outcome.error == "turn_lost"
    assert isinstance(record, SharedTurnRecord) and record.fenced
    assert [type(e).__name__ for e in record.events] == ["Token", "TurnFailed"]
    assert await _stream(client, "t3") == [("1-0", "Token"), ("2-0", "TurnFailed")]


async def test_readers_here_do_not_wait_out_an_outage_and_the_log_catches_up(tmp_path: Path) -> None:
    async with RedisServer(tmp_path / "redis") as server:
        log = RedisTurnLog(server.url, "owner", 300, 10_000)
        log.start()
        try:
            record = log.open(_turn("t4"))
            await log.flush(5)
            server.kill()
            log.append(record, _token("t4", "a"))
            log.append(record, _token("t4", "b"))
            await asyncio.wait_for(record.wait(0), 30)  # released after the first failed attempt
            assert record.last_seq == 2
            await server.start()  # the writer is still retrying: the shared log gets them, once each
            assert await log.flush(30)
            client = aioredis.Redis.from_url(server.url, decode_responses=True)
            try:
                assert await _stream(client, "t4") == [("1-0", "Token"), ("2-0", "Token")]
            finally:
                await client.aclose()
            assert log.write_failures == 0
        finally:
            await log.close()
