"""Instances as real processes on one Redis: an instance killed with SIGKILL mid-turn, a rate
limit shared across instances, and a graceful stop that leaves Redis clean."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import aiohttp
import pytest

from tests.llm_server import Reply, ScriptedLLM
from tests.redis_server import RedisServer
from tests.test_serve_process import Service, _start

pytestmark = pytest.mark.subprocess

LEASE_SECONDS = 2.0


async def _instance(directory: Path, **env: str) -> Service:
    directory.mkdir(parents=True, exist_ok=True)
    return await _start(directory, **env)


async def _frames(resp: aiohttp.ClientResponse) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    event_id = ""
    async for raw in resp.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("id: "):
            event_id = line[4:]
        elif line.startswith("data: "):
            out.append((event_id, line[6:]))
    return out


async def test_sigkill_mid_turn_gives_turn_lost_and_frees_the_session(tmp_path: Path, redis: RedisServer) -> None:
    async with ScriptedLLM() as llm:
        llm.default = Reply("never finished", hang=True)
        env = {"SESSION_STORE": "redis", "REDIS_URL": redis.url, "REDIS_LEASE_SECONDS": str(LEASE_SECONDS),
               "LLM_PROVIDER": "openai", "OPENAI_BASE_URL": f"{llm.url}/v1", "LLM_MAX_RETRIES": "0"}
        a = await _instance(tmp_path / "a", **env)
        b = await _instance(tmp_path / "b", **env)
        try:
            async with aiohttp.ClientSession() as http:
                started = await http.post(f"{a.url}/api/v1/chat/stream", json={"session_id": "s", "message": "hi"})
                turn_id = started.headers["X-Turn-ID"]
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 10
                while len(llm.requests) < 1:  # the turn is running on A: the model holds it
                    assert loop.time() < deadline
                    await asyncio.sleep(0.01)
                # B queues the next turn of the same session behind A's
                llm.default = Reply("B answers now")
                waiting = asyncio.ensure_future(
                    http.post(f"{b.url}/api/v1/chat", json={"session_id": "s", "message": "still there?"}))
                reader = await http.get(f"{b.url}/api/v1/sessions/s/turns/{turn_id}/events")
                killed_at = time.monotonic()
                a.proc.send_signal(signal.SIGKILL)
                await a.proc.wait()
                frames = await asyncio.wait_for(_frames(reader), LEASE_SECONDS + 10)
                lost_after = time.monotonic() - killed_at
                assert [f[1] for f in frames if '"type": "error"' in f[1] or '"type":"error"' in f[1]], frames
                assert '"turn_lost"' in frames[-1][1] and frames[-1][0] == f"{turn_id}:1"
                assert lost_after < LEASE_SECONDS + 5, lost_after  # within the stated bound
                reply = await asyncio.wait_for(waiting, LEASE_SECONDS + 15)
                assert reply.status == 200, await reply.text()
                body = await reply.json()
                assert body["message"] == "B answers now" and body["message_count"] == 2
                status = await (await http.get(f"{b.url}/api/v1/sessions/s/turns/{turn_id}")).json()
                assert status["status"] == "failed" and status["error"] == "turn_lost"
        finally:
            for service in (a, b):
                if service.proc.returncode is None:
                    service.proc.send_signal(signal.SIGTERM)
                    await service.finish()


async def test_rate_limit_is_shared_across_instances(tmp_path: Path, redis: RedisServer) -> None:
    env = {"SESSION_STORE": "redis", "REDIS_URL": redis.url, "ENABLE_RATE_LIMITING": "true",
           "RATE_LIMIT_PER_MINUTE": "5"}
    a = await _instance(tmp_path / "a", **env)
    b = await _instance(tmp_path / "b", **env)
    try:
        async with aiohttp.ClientSession() as http:
            statuses = []
            for url in (a.url, a.url, a.url, b.url, b.url, b.url):
                async with http.get(f"{url}/api/v1/sessions") as resp:
                    statuses.append(resp.status)
                    if resp.status == 429:
                        assert int(resp.headers["Retry-After"]) >= 1
            assert statuses == [200, 200, 200, 200, 200, 429]
    finally:
        for service in (a, b):
            service.proc.send_signal(signal.SIGTERM)
            code, out, err = await service.finish()
            assert code == 0, err
            assert "Server stopped gracefully. Goodbye!" in out
