"""PostgreSQL restarted (``pg_ctl restart``, fast shutdown: every connection dropped) under a
bounded load of chats against a service process with SESSION_STORE=postgres, half of them
streamed: every request gets an answer (a 200, a stream that ends with one ``done`` or one
``error`` event) or 503 ``store_unavailable`` with Retry-After, none hangs past its timeout,
readiness reports the outage and recovers by itself, the same sessions work again within a few
seconds, and every turn acknowledged (200, or ``done``) is in the store afterwards.

The cluster is this test's own (a restart must not touch the session's shared one)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from tests.conftest import assert_envelope
from tests.pg_server import PgCluster, start_cluster
from tests.test_serve_process import _start

SESSIONS = 6
BEFORE = 12  # acknowledged turns before the restart
AFTER_EACH = 2  # acknowledged turns per session after it
MAX_REQUESTS = 60  # per session: the load is bounded
REQUEST_TIMEOUT = 30.0
RECOVERY_SECONDS = 10.0  # "within a few seconds" of PostgreSQL accepting connections again


@pytest.fixture
def own_cluster() -> Iterator[PgCluster]:
    cluster = start_cluster(pytest.skip)
    assert cluster is not None
    try:
        yield cluster
    finally:
        cluster.stop()


async def _answered(http: aiohttp.ClientSession, url: str, session: str, message: str,
                    stream: bool) -> tuple[int, dict[str, Any] | None, str | None]:
    """(200, None, None) for an acknowledged turn; (0, None, None) for a stream that ended with its
    one error event (an answer, not an acknowledgement); (status, body, Retry-After) otherwise."""
    path = "/api/v1/chat/stream" if stream else "/api/v1/chat"
    async with http.post(f"{url}{path}", json={"session_id": session, "message": message}) as resp:
        if resp.status != 200:
            return resp.status, await resp.json(), resp.headers.get("Retry-After")
        if not stream:
            await resp.read()
            return 200, None, None
        text = await resp.text()
    events = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]
    kinds = [e["type"] for e in events]
    assert kinds.count("done") + kinds.count("error") == 1 and kinds[-1] in ("done", "error"), kinds
    if kinds[-1] == "error":
        assert events[-1]["error"] == "store_unavailable" and events[-1]["retry_after"] >= 1, events[-1]
        return 0, None, None
    return 200, None, None


@pytest.mark.subprocess
async def test_a_postgres_restart_under_load_loses_no_acknowledged_turn(tmp_path: Path,
                                                                       own_cluster: PgCluster) -> None:
    database_url = own_cluster.create_database("restart")
    service = await _start(tmp_path, SESSION_STORE="postgres", DATABASE_URL=database_url)
    acknowledged: dict[str, list[str]] = {f"s{n}": [] for n in range(SESSIONS)}
    after: dict[str, int] = dict.fromkeys(acknowledged, 0)
    refused = 0
    enough, back = asyncio.Event(), asyncio.Event()
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as http:

            async def worker(index: int, session: str) -> None:
                nonlocal refused
                for n in range(MAX_REQUESTS):
                    message = f"{session} message {n}"
                    # aiohttp's total timeout bounds each request: a hang fails the test
                    status, body, retry_after = await _answered(http, service.url, session, message, index % 2 == 1)
                    if status == 200:
                        acknowledged[session].append(message)
                        if sum(map(len, acknowledged.values())) >= BEFORE:
                            enough.set()
                        if back.is_set():
                            after[session] += 1
                            if after[session] >= AFTER_EACH:
                                return
                    elif status != 0:
                        assert status == 503 and body is not None, (status, body)
                        assert_envelope(body, "store_unavailable")
                        assert retry_after is not None and int(retry_after) >= 1
                        refused += 1
                        await asyncio.sleep(0.1)  # a client backs off before it retries
                raise AssertionError(f"{session}: no {AFTER_EACH} answers after the restart in {MAX_REQUESTS}")

            workers = asyncio.gather(*(worker(i, s) for i, s in enumerate(acknowledged)))
            try:
                await asyncio.wait_for(enough.wait(), 60)
                own_cluster.stop_server()  # the first half of pg_ctl restart, to look at the outage
                async with http.get(f"{service.url}/health/readiness") as ready:
                    body = await ready.json()
                    assert ready.status == 503 and body["checks"]["database"] == "unavailable", body
                    assert body["checks"]["session_store"] == "unavailable"
                await asyncio.to_thread(own_cluster.start_server)
                started = time.monotonic()
                while True:  # readiness recovers by itself
                    async with http.get(f"{service.url}/health/readiness") as ready:
                        if ready.status == 200:
                            break
                    assert time.monotonic() - started < RECOVERY_SECONDS, "readiness did not recover"
                    await asyncio.sleep(0.05)
                back.set()
                await asyncio.wait_for(workers, 120)
                await asyncio.to_thread(own_cluster.restart)  # and a plain pg_ctl restart: the pool recovers
                started = time.monotonic()
                while True:
                    status, body, _ = await _answered(http, service.url, "s0", "after the restart", False)
                    if status == 200:
                        acknowledged["s0"].append("after the restart")
                        break
                    assert status == 503, (status, body)
                    assert time.monotonic() - started < RECOVERY_SECONDS, "s0 did not work again"
                    await asyncio.sleep(0.1)
            finally:
                workers.cancel()
                await asyncio.gather(workers, return_exceptions=True)
    finally:
        service.proc.terminate()
        await service.finish()
    conn = await asyncpg.connect(database_url)
    try:
        for session, messages in acknowledged.items():
            stored = {r[0] for r in await conn.fetch(
                "SELECT content FROM messages WHERE session_id = $1 AND role = 'user'", session)}
            missing = [m for m in messages if m not in stored]
            assert not missing, f"{session}: acknowledged but not stored: {missing}"
    finally:
        await conn.close()
    assert sum(after.values()) == SESSIONS * AFTER_EACH
    assert refused >= 1, "no request met the outage: the test did not test it"


async def _readiness(http: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, Any]]:
    async with http.get(f"{url}/health/readiness") as resp:
        body: dict[str, Any] = await resp.json()
        return resp.status, body


@pytest.mark.subprocess
async def test_postgres_down_at_start_up_starts_not_ready_and_recovers_migrated(tmp_path: Path,
                                                                                own_cluster: PgCluster) -> None:
    """DATABASE_URL names a database whose server is down when the service starts: it starts (as
    with Redis down), not ready with the reason, answers 503 store_unavailable, and once PostgreSQL
    accepts connections it becomes ready by itself with the schema migrated and the demo orders
    seeded, without a restart."""
    database_url = own_cluster.create_database("late", empty=True)  # no schema: the service migrates it
    own_cluster.stop_server()
    service = await _start(tmp_path, SESSION_STORE="postgres", DATABASE_URL=database_url, ORDER_DB_SEED="true")
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)) as http:
            status, body = await _readiness(http, service.url)
            assert status == 503 and body["status"] == "not_ready", body
            assert body["checks"]["database"] == "unavailable" and body["checks"]["session_store"] == "unavailable"
            assert any("PostgreSQL" in w for w in body["warnings"]), body
            async with http.post(f"{service.url}/api/v1/chat", json={"session_id": "s", "message": "hi"}) as resp:
                assert resp.status == 503 and resp.headers.get("Retry-After")
                assert_envelope(await resp.json(), "store_unavailable")

            await asyncio.to_thread(own_cluster.start_server)
            started = time.monotonic()
            while (status := (await _readiness(http, service.url))[0]) != 200:  # recovers by itself
                assert status == 503
                assert time.monotonic() - started < RECOVERY_SECONDS, "readiness did not recover"
                await asyncio.sleep(0.05)
            async with http.post(f"{service.url}/api/v1/chat", json={"session_id": "s", "message": "hi"}) as resp:
                assert resp.status == 200, await resp.text()
    finally:
        service.proc.terminate()
        code, _, err = await service.finish()
    assert code == 0 and "Traceback" not in err, err
    conn = await asyncpg.connect(database_url)
    try:
        from msev15.store.pg_schema import SCHEMA_VERSION

        assert await conn.fetchval("SELECT MAX(version) FROM msev15_migrations") == SCHEMA_VERSION
        assert await conn.fetchval("SELECT COUNT(*) FROM orders") > 0  # the seed waited for the database
    finally:
        await conn.close()
