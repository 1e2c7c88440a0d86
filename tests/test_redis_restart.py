"""Redis crashes (SIGKILL) and restarts from its append-only file while two instances serve chats on
several sessions, half of them streamed: every request gets an answer (a 200, a stream that ends
with one ``done`` or one ``error`` event) or 503 ``store_unavailable`` with Retry-After, none
hangs past its timeout, readiness reports the outage and recovers by itself, the same sessions
work again after the restart, and every turn acknowledged (200, or ``done``) is in the store."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import assert_envelope
from tests.instances import two_apps
from tests.llm_server import ScriptedLLM
from tests.redis_server import RedisServer

SESSIONS = 6
BEFORE = 12  # acknowledged turns before the crash
AFTER_EACH = 2  # acknowledged turns per session after the restart
MAX_REQUESTS = 40  # per session: the load is bounded
REQUEST_TIMEOUT = 30.0


@pytest.fixture
async def redis(tmp_path: Path) -> AsyncIterator[RedisServer]:
    async with RedisServer(tmp_path / "redis", aof=True) as server:
        yield server


async def _history(client: TestClient, session: str) -> list[str]:
    resp = await client.get(f"/api/v1/sessions/{session}/history")
    assert resp.status == 200, await resp.text()
    return [m["content"] for m in (await resp.json())["messages"] if m["role"] == "user"]


async def test_a_redis_restart_under_load_loses_no_acknowledged_turn(aiohttp_client: Any, tmp_path: Path,
                                                                   redis: RedisServer, llm: ScriptedLLM) -> None:
    clients = list(await two_apps(aiohttp_client, tmp_path, redis.url, llm))
    acknowledged: dict[str, list[str]] = {f"s{n}": [] for n in range(SESSIONS)}
    refused = 0
    restarted = asyncio.Event()
    enough = asyncio.Event()
    after: dict[str, int] = dict.fromkeys(acknowledged, 0)

    async def answered(client: TestClient, session: str, message: str, stream: bool) -> tuple[int, Any]:
        """(status, envelope) of a refusal, or (200, None) for an acknowledged turn, or (0, None)
        for a stream that ended with one error event (not acknowledged: nothing to check)."""
        path = "/api/v1/chat/stream" if stream else "/api/v1/chat"
        resp = await client.post(path, json={"session_id": session, "message": message})
        if resp.status != 200 or not stream:
            return resp.status, None if resp.status == 200 else resp
        events = [json.loads(line[6:]) for line in (await resp.text()).splitlines() if line.startswith("data: ")]
        kinds = [e["type"] for e in events]
        assert kinds.count("done") + kinds.count("error") == 1 and kinds[-1] in ("done", "error"), kinds
        if kinds[-1] == "error":  # a clear reason, and when to come back
            assert events[-1]["error"] in ("store_unavailable", "turn_lost"), events[-1]
            assert events[-1]["retry_after"] >= 1, events[-1]
            return 0, None
        return 200, None

    async def worker(index: int, session: str) -> None:
        nonlocal refused
        for n in range(MAX_REQUESTS):
            client = clients[(index + n) % 2]  # alternate instances: any instance serves any session
            message = f"{session} message {n}"
            status, resp = await asyncio.wait_for(answered(client, session, message, index % 2 == 1), REQUEST_TIMEOUT)
            if status == 0:
                continue  # the stream ended with its error event: an answer, not an acknowledgement
            if status == 200:
                acknowledged[session].append(message)
                if sum(map(len, acknowledged.values())) >= BEFORE:
                    enough.set()
                if restarted.is_set():
                    after[session] += 1
                    if after[session] >= AFTER_EACH:
                        return
            else:
                assert status == 503, await resp.text()
                assert_envelope(await resp.json(), "store_unavailable")
                assert int(resp.headers["Retry-After"]) >= 1
                refused += 1
                await asyncio.sleep(0.1)  # a client backs off before it retries
        raise AssertionError(f"{session}: no {AFTER_EACH} answers after the restart in {MAX_REQUESTS} requests")

    workers = asyncio.gather(*(worker(i, s) for i, s in enumerate(acknowledged)))
    try:
        await asyncio.wait_for(enough.wait(), 60)
        redis.kill()
        ready = await clients[0].get("/health/readiness")
        assert ready.status == 503 and (await ready.json())["checks"]["session_store"] == "unavailable"
        await redis.start()  # same port, same directory: the AOF is replayed
        restarted.set()
        recovered_by = time.monotonic() + 15
        for client in clients:  # readiness recovers by itself
            while (await client.get("/health/readiness")).status != 200:
                assert time.monotonic() < recovered_by, "readiness did not recover"
                await asyncio.sleep(0.05)
        await asyncio.wait_for(workers, 120)
    finally:
        workers.cancel()
        await asyncio.gather(workers, return_exceptions=True)
    for session, messages in acknowledged.items():
        stored = await _history(clients[1], session)
        missing = [m for m in messages if m not in stored]
        assert not missing, f"{session}: acknowledged but not stored: {missing}"
