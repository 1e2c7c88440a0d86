"""Tenant profiles across instances: two service processes on one Redis. A profile written
through one instance is used by the next turn on the other, and each reports the version."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.llm_server import Reply, ScriptedLLM
from tests.redis_server import RedisServer
from tests.test_serve_process import Service, _start

pytestmark = pytest.mark.subprocess


@pytest.fixture
async def redis(tmp_path: Path) -> AsyncIterator[RedisServer]:
    async with RedisServer(tmp_path / "redis") as server:
        yield server


async def _instance(directory: Path, **env: str) -> Service:
    directory.mkdir(parents=True, exist_ok=True)
    return await _start(directory, **env)


async def test_a_profile_written_on_one_instance_is_used_by_the_next_turn_on_the_other(
        tmp_path: Path, redis: RedisServer) -> None:
    async with ScriptedLLM() as llm:
        env = {"SESSION_STORE": "redis", "REDIS_URL": redis.url, "LLM_PROVIDER": "openai",
               "OPENAI_BASE_URL": f"{llm.url}/v1", "LLM_MAX_RETRIES": "0"}
        a = await _instance(tmp_path / "a", **env)
        b = await _instance(tmp_path / "b", **env)
        try:
            async with aiohttp.ClientSession() as http:
                async def put(service: Service, profile: dict[str, object]) -> int:
                    resp = await http.put(f"{service.url}/api/v1/agent-profile?tenant_id=acme", json=profile)
                    assert resp.status == 200, await resp.text()
                    return int((await resp.json())["version"])

                async def chat(service: Service, tenant: str = "acme") -> dict[str, object]:
                    llm.push(Reply("ok"))
                    resp = await http.post(f"{service.url}/api/v1/chat",
                                           json={"session_id": "s", "tenant_id": tenant, "message": "hi"})
                    assert resp.status == 200, await resp.text()
                    body: dict[str, object] = await resp.json()
                    return body

                def system() -> str:
                    return str(llm.requests[-1]["messages"][0]["content"])

                assert await put(a, {"instructions": "Acme rules, first edition."}) == 1
                body = await chat(b)
                assert body["profile_version"] == 1 and system() == "Acme rules, first edition."
                # The turn status read on the other instance reports the version too.
                status = await (await http.get(f"{a.url}/api/v1/sessions/s/turns/{body['turn_id']}"
                                               "?tenant_id=acme")).json()
                assert status["status"] == "completed" and status["profile_version"] == 1

                assert await put(b, {"instructions": "Acme rules, second edition."}) == 2
                body = await chat(a)
                assert body["profile_version"] == 2 and system() == "Acme rules, second edition."
                other = await chat(b, tenant="globex")  # another tenant sees none of it
                assert other["profile_version"] == 0 and "Acme" not in system()

                assert (await http.delete(f"{a.url}/api/v1/agent-profile?tenant_id=acme")).status == 204
                body = await chat(b)
                assert body["profile_version"] == 0 and "Acme" not in system()
        finally:
            for service in (a, b):
                if service.proc.returncode is None:
                    service.proc.send_signal(signal.SIGTERM)
                    await service.finish()
