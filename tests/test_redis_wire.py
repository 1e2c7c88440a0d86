"""The hot path's Redis client (store/redis_wire.py) against real redis-servers: replies, batches,
transactions, scripts Redis forgot, many callers on one connection, and redis-py's failure
contract (timeouts, lost connections, refused set-up), which ``translated`` turns into
StoreUnavailable."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
import redis.exceptions
from redis.exceptions import AuthenticationError

from msev15.store.base import StoreUnavailable
from msev15.store.redis_kit import connect, translated
from msev15.store.redis_wire import PyWire, Script, Wire, run_each, wire
from tests.redis_cluster import RedisCluster
from tests.redis_server import RedisServer, free_port

COUNT = Script("return redis.call('INCR', KEYS[1])")


@pytest.fixture
async def direct(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
async def hot(redis_url: str) -> AsyncIterator[Wire]:
    client = Wire(redis_url)
    yield client
    await client.aclose()


async def test_replies_read_as_redis_py_reads_them(hot: Wire, direct: aioredis.Redis) -> None:
    assert await hot.call("SET", "k", "välue") == "OK"
    assert await direct.get("k") == "välue"
    assert await hot.call("HSET", "h", "a", 1, "b", 2.5) == 2
    assert await hot.call("HGET", "h", "b") == "2.5"
    assert await hot.call("HGET", "h", "missing") is None
    assert await hot.call("HMGET", "h", "a", "zz") == ["1", None]
    assert await hot.call("LRANGE", "no-list", 0, -1) == []


async def test_a_batch_is_one_reply_per_command_and_an_error_reply_stays_in_its_place(hot: Wire) -> None:
    replies = await hot.batch([("SET", "n", "1"), ("HGET", "n", "f"), ("INCR", "n"), ("GET", "n")])
    assert replies[0] == "OK" and replies[2] == 2 and replies[3] == "2"
    assert isinstance(replies[1], redis.exceptions.ResponseError) and "WRONGTYPE" in str(replies[1])
    with pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE"):
        await hot.call("HGET", "n", "f")
    assert await hot.call("GET", "n") == "2"  # the connection is still in step after an error


async def test_a_transaction_returns_exec_s_replies(hot: Wire, direct: aioredis.Redis) -> None:
    await direct.rpush("l", "a", "b", "c")
    assert await hot.batch([("LLEN", "l"), ("LRANGE", "l", -2, -1)], transaction=True) == [3, ["b", "c"]]
    with pytest.raises(redis.exceptions.ResponseError, match="unknown command"):  # refused when queued
        await hot.batch([("LLEN", "l"), ("NOSUCHCOMMAND",)], transaction=True)
    assert await direct.llen("l") == 3


async def test_a_script_redis_forgot_is_loaded_and_run_once(hot: Wire, direct: aioredis.Redis) -> None:
    await direct.script_flush()
    assert await hot.run(COUNT, ["c"], []) == 1
    await direct.script_flush()
    replies = await run_each(hot, COUNT, [(["c"], []), (["d"], []), (["c"], [])])
    assert replies == [2, 1, 3]
    assert await direct.get("c") == "3" and await direct.get("d") == "1"  # no call ran twice


async def test_run_each_raises_an_error_reply(hot: Wire) -> None:
    failing = Script("return redis.error_reply('nope')")
    with pytest.raises(redis.exceptions.ResponseError, match="nope"):
        await run_each(hot, failing, [([], [])])


async def test_many_callers_share_the_connection_and_each_gets_its_own_reply(hot: Wire) -> None:
    await hot.batch([("SET", f"m{i}", str(i)) for i in range(300)])
    replies = await asyncio.gather(*(hot.call("GET", f"m{i}") for i in range(300)),
                                   *(hot.batch([("GET", f"m{i}"), ("EXISTS", f"m{i}")]) for i in range(300)))
    assert replies[:300] == [str(i) for i in range(300)]
    assert replies[300:] == [[str(i), 1] for i in range(300)]
    clients = await hot.call("CLIENT", "LIST")
    assert clients.count("cmd=client") == 1  # one connection served them all


async def test_a_reply_later_than_the_timeout_fails_and_the_next_call_reconnects(redis_url: str,
                                                                                 direct: aioredis.Redis) -> None:
    hot = Wire(redis_url, timeout=0.3)
    try:
        assert await hot.call("PING") == "PONG"
        await direct.client_pause(1000)  # holds every normal client's commands for a second
        with pytest.raises(redis.exceptions.TimeoutError):
            await hot.call("GET", "x")
        with pytest.raises(StoreUnavailable, match="TimeoutError"):
            await translated(hot.call)("GET", "x")
        await direct.client_unpause()
        assert await hot.call("SET", "x", "1") == "OK"
        assert await hot.call("GET", "x") == "1"
    finally:
        await hot.aclose()


async def test_a_killed_connection_fails_its_callers_and_the_next_call_reconnects(hot: Wire,
                                                                                 direct: aioredis.Redis) -> None:
    await hot.call("CLIENT", "SETNAME", "hot")
    blocked = asyncio.create_task(hot.call("BLPOP", "never", 4))
    while "cmd=blpop" not in await direct.execute_command("CLIENT", "LIST"):
        await asyncio.sleep(0.01)
    assert await direct.client_kill_filter(_type="normal", skipme=True) >= 1
    with pytest.raises(redis.exceptions.ConnectionError):
        await blocked
    assert await hot.call("PING") == "PONG"


async def test_a_restarted_server_is_reached_again_with_its_scripts_reloaded(redis: RedisServer) -> None:
    hot = Wire(redis.url)
    try:
        assert await hot.run(COUNT, ["r"], []) == 1
        redis.stop()
        with pytest.raises(redis_exceptions_unavailable()):
            await hot.call("PING")
        await redis.start()
        assert await hot.run(COUNT, ["r"], []) == 1  # no AOF: the key and the script cache are gone
    finally:
        await hot.aclose()


def redis_exceptions_unavailable() -> tuple[type[Exception], ...]:
    return redis.exceptions.ConnectionError, redis.exceptions.TimeoutError


async def test_an_unreachable_server_is_store_unavailable() -> None:
    hot = Wire(f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(redis.exceptions.ConnectionError, match="unreachable"):
        await hot.call("PING")
    with pytest.raises(StoreUnavailable):
        await translated(hot.batch)([("PING",)])


async def test_the_url_s_database_and_credentials_are_used(redis_url: str, direct: aioredis.Redis) -> None:
    await direct.acl_setuser("hotpath", enabled=True, passwords=["+s3cret"], keys=["*"], commands=["+@all"])
    base = redis_url.removeprefix("redis://").removesuffix("/0")
    hot = Wire(f"redis://hotpath:s3cret@{base}/3")
    try:
        await hot.call("SET", "in-three", "yes")
        assert await direct.get("in-three") is None
        db3 = aioredis.Redis.from_url(f"redis://{base}/3", decode_responses=True)
        assert await db3.get("in-three") == "yes"
        await db3.aclose()
        assert await hot.call("ACL", "WHOAMI") == "hotpath"
    finally:
        await hot.aclose()
    wrong = Wire(f"redis://hotpath:wrong@{base}/0")
    with pytest.raises(redis.exceptions.ConnectionError, match="refused the connection"):
        await wrong.call("PING")
    await direct.acl_deluser("hotpath")


async def test_a_closed_client_sends_nothing(hot: Wire) -> None:
    assert await hot.call("PING") == "PONG"
    await hot.aclose()
    with pytest.raises(redis.exceptions.ConnectionError, match="closed"):
        await hot.call("PING")


async def test_a_cluster_socket_tls_or_optioned_url_keeps_the_store_s_redis_py_client(
        redis_cluster: RedisCluster) -> None:
    plain = aioredis.Redis()
    assert isinstance(wire("redis://127.0.0.1:1/0", plain), Wire)
    assert isinstance(wire("unix:///tmp/redis.sock", plain), PyWire)
    assert isinstance(wire("rediss://127.0.0.1:1/0", plain), PyWire)  # TLS: redis-py applies its options
    assert isinstance(wire("redis://127.0.0.1:1/0?socket_keepalive=true", plain), PyWire)
    await plain.aclose()
    client = connect(redis_cluster.url)
    hot = wire(redis_cluster.url, client)
    try:
        assert isinstance(hot, PyWire)
        keys = ["{t}:a", "{t}:b"]  # one slot
        assert await hot.run(COUNT, keys[:1], []) == 1
        replies = await hot.batch([("SET", keys[1], "v"), ("GET", keys[1]), ("HGET", keys[1], "f")])
        assert replies[:2] == [True, "v"] and isinstance(replies[2], redis.exceptions.ResponseError)
        assert await hot.batch([("INCR", keys[0]), ("GET", keys[1])], transaction=True) == [2, "v"]
        assert await run_each(hot, COUNT, [(keys[:1], []), (["{u}:c"], [])]) == [3, 1]
        await hot.aclose()  # the store's client stays open: its store closes it
        assert await client.get(keys[1]) == "v"
    finally:
        await client.aclose()


async def test_what_callers_send_in_one_loop_turn_goes_out_in_one_write(hot: Wire) -> None:
    assert await hot.call("PING") == "PONG"
    conn = hot._conn
    assert conn is not None and conn.transport is not None
    transport = conn.transport
    writes: list[bytes] = []
    send = transport.write

    def counted(data: bytes | bytearray | memoryview) -> None:
        writes.append(bytes(data))
        send(data)

    transport.write = counted  # type: ignore[method-assign]
    replies = await asyncio.gather(*(hot.call("INCR", "w") for _ in range(50)), hot.batch([("GET", "w")] * 3))
    assert sorted(replies[:50]) == list(range(1, 51))
    assert len(writes) == 1 and writes[0].count(b"INCR") == 50
    assert await hot.call("GET", "w") == "50"
    assert len(writes) == 2


async def test_the_stores_of_one_loop_share_one_client_per_url(redis_url: str) -> None:
    plain = aioredis.Redis()
    first, second = wire(redis_url, plain), wire(redis_url, plain)
    assert first is second and isinstance(first, Wire)
    await first.call("SET", "shared", "1")
    await first.aclose()  # one store gone: the other still uses it
    assert await second.call("GET", "shared") == "1"
    await second.aclose()
    with pytest.raises(redis.exceptions.ConnectionError, match="closed"):
        await second.call("PING")
    third = wire(redis_url, plain)  # a store opened later gets a new client
    assert third is not first and await third.call("GET", "shared") == "1"
    await third.aclose()
    await plain.aclose()


async def test_an_error_reply_is_the_exception_redis_py_raises_for_it(redis: RedisServer) -> None:
    """NOAUTH (a server that now asks for a password) is redis-py's AuthenticationError, a
    connection failure: StoreUnavailable, not a bare error reply."""
    hot = Wire(redis.url)
    admin = aioredis.Redis.from_url(redis.url, decode_responses=True)
    try:
        await admin.config_set("requirepass", "now-required")
        with pytest.raises(AuthenticationError):  # (the fixture's name hides the redis module here)
            await hot.call("GET", "x")
        with pytest.raises(StoreUnavailable):
            await translated(hot.call)("GET", "x")
        replies = await hot.batch([("GET", "x")])
        assert isinstance(replies[0], AuthenticationError)
    finally:
        await admin.aclose()
        await hot.aclose()
