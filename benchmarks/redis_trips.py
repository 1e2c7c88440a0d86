"""Redis round trips and commands per turn, for a plain (JSON) and a streamed turn.

The service reaches Redis through a counting TCP proxy in this process: every read of a client's
bytes on its way to Redis is one request write, i.e. one round trip (a pipeline goes in one write;
the hot path's client also writes what all of a turn's stores send in one loop turn at once).
Commands are counted on the server, from ``INFO commandstats`` before and after. The turns run
one after another on one connection, each in a new session, so background work (the
instance heartbeat, every REDIS_LEASE_SECONDS / 4) is a small and stated share of the figures.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

from benchmarks.httpwire import json_post
from benchmarks.load import STREAM, STREAM_DONE, Expect, closed_loop
from msev15.store.redis_wire import Script, Wire

TURNS = 40


@dataclass
class TripCounter:
    """A TCP proxy that counts the client-to-Redis writes it forwards."""

    target_port: int
    trips: int = 0
    port: int = 0
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> TripCounter:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        pumps = [asyncio.create_task(self._pump(reader, up_writer, count=True)),
                 asyncio.create_task(self._pump(up_reader, writer, count=False))]
        self._tasks.update(pumps)
        try:
            await asyncio.gather(*pumps, return_exceptions=True)
        finally:
            self._tasks.difference_update(pumps)
            writer.close()
            up_writer.close()

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, *, count: bool) -> None:
        try:
            while data := await src.read(65536):
                if count:
                    self.trips += 1
                dst.write(data)
                await dst.drain()
        finally:
            dst.close()


async def _commands(url: str) -> dict[str, int]:
    client = aioredis.Redis.from_url(url)
    try:
        stats = await client.info("commandstats")
    finally:
        await client.aclose()
    return {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}


async def redis_cpu_seconds(url: str) -> float:
    """CPU Redis has used so far (``used_cpu_sys`` + ``used_cpu_user`` of ``INFO cpu``), in seconds."""
    client = aioredis.Redis.from_url(url)
    try:
        cpu = await client.info("cpu")
    finally:
        await client.aclose()
    return float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"])


async def measure(service_port: int, counter: TripCounter, redis_url: str, path: str,
                  tag: str) -> tuple[float, float, dict[str, float]]:
    """(round trips per turn, commands per turn, commands per turn by name) over TURNS turns."""
    expect = Expect(contains=STREAM_DONE) if path == STREAM else Expect()

    def build(conn: int, n: int) -> bytes:
        return json_post(path, {"session_id": f"{tag}-{n}", "message": "Where is my order ORD-1A2B3C4D?",
                                "tenant_id": "bench"})

    before_trips, before = counter.trips, await _commands(redis_url)
    result = await closed_loop(service_port, build, connections=1, duration=120, max_requests=TURNS, expect=expect)
    after_trips, after = counter.trips, await _commands(redis_url)
    if result.error_count or result.completed != TURNS:
        raise RuntimeError(f"{result.error_count} errors, {result.completed} of {TURNS} turns ({tag})")
    by_name = {name: (after[name] - before.get(name, 0)) / TURNS for name in after
               if name != "info" and after[name] != before.get(name, 0)}
    return (after_trips - before_trips) / TURNS, sum(by_name.values()), by_name


CLIENT_CALLS = 2000


async def client_cost(url: str) -> dict[str, float]:
    """CPU microseconds a Python client spends per round trip, measured in this process, one call
    at a time: a GET, a cached script (EVALSHA) and a pipeline of three commands, through redis-py
    (asyncio, hiredis parser: what the service uses off the hot path) and through the hot path's
    own client (store/redis_wire.py: ``wire_*``). With the round trips per turn the hot path's
    figure gives the floor of what the Redis path adds to a turn's CPU on the service's side,
    whatever the turn does around them."""
    client = aioredis.Redis.from_url(url, decode_responses=True)
    hot = Wire(url)
    try:
        await client.set("bench:cost", "1")
        script = client.register_script("return redis.call('GET', KEYS[1])")
        lean = Script("return redis.call('GET', KEYS[1])")

        async def pipeline() -> None:
            async with client.pipeline(transaction=False) as pipe:
                for _ in range(3):
                    pipe.get("bench:cost")
                await pipe.execute()

        calls: dict[str, Callable[[], Awaitable[Any]]] = {
            "get": lambda: client.get("bench:cost"), "evalsha": lambda: script(keys=["bench:cost"]),
            "pipeline3": pipeline, "wire_get": lambda: hot.call("GET", "bench:cost"),
            "wire_evalsha": lambda: hot.run(lean, ["bench:cost"], []),
            "wire_pipeline3": lambda: hot.batch([("GET", "bench:cost")] * 3)}
        out: dict[str, float] = {}
        for name, call in calls.items():
            await call()  # connect; load the script
            started = time.process_time()
            for _ in range(CLIENT_CALLS):
                await call()
            out[name] = (time.process_time() - started) / CLIENT_CALLS * 1e6
        await client.delete("bench:cost")
        return out
    finally:
        await hot.aclose()
        await client.aclose()
