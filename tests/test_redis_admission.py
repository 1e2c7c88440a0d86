"""SESSION_STORE=redis: the coordination's admit script reads, in the step that admits the turn
(agent/redis_coordination.py), what the turn used to look up on its own: the session's mode (held
for a person) and whether it has a paused step (waiting tool calls). These tests pin what that
step must keep of the look-ups it replaces: a held session's message is stored for the person and
reaches neither the model nor the queue; a session idle past its TTL, another tenant's session of
the same id, a session handed back to the agent and HANDOFF_ENABLED=false hold nothing back; a new
message to a session with a paused step still settles it (``superseded``) before the model, and a
continuation still takes its step. A real redis-server, the scripted model and real orders.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient

from msev15.agent.coordination import COORDINATION
from msev15.store.base import SESSIONS
from msev15.store.redis_kit import tenant_key
from tests.admission_cases import (
    ANSWER,
    hold_is_per_tenant_and_per_live_session,
    new_message_settles_a_paused_step_first,
)
from tests.conftest import chat_ok
from tests.llm_server import ScriptedLLM


async def _queue_length(url: str, tenant: str, session: str) -> int:
    client = aioredis.Redis.from_url(url)
    try:
        return int(await client.llen(tenant_key(tenant, "queue", session)))
    finally:
        await client.aclose()


async def _redis_service(service: Any, llm: ScriptedLLM, redis_url: str, **extra: Any) -> TestClient:
    client: TestClient = await service(llm_provider="openai", openai_base_url=f"{llm.url}/v1", llm_max_retries=0,
                                       session_store="redis", redis_url=redis_url, **extra)
    return client


async def test_a_held_session_is_refused_at_admission_and_leaves_no_queue_entry(
        service: Any, llm: ScriptedLLM, redis_url: str) -> None:
    client = await _redis_service(service, llm, redis_url)
    assert client.app[COORDINATION].reads_hold  # the admit script reads the mode: no look-up of its own
    assert (await chat_ok(client, "s1", "Hi"))["message"] == ANSWER
    assert await client.app[SESSIONS].set_mode("default", "s1", "human")

    body = await chat_ok(client, "s1", "Is anyone there?", if_busy="reject")
    assert (body["status"], body["message"], body["mode"], body["message_count"]) == ("with_human", None, "human", 3)
    assert len(llm.requests) == 1  # never sent to the model
    assert await _queue_length(redis_url, "default", "s1") == 0  # nor left in the session's queue

    # Handed back: the agent answers again, and the session is not busy (reject passes).
    assert await client.app[SESSIONS].set_mode("default", "s1", "agent", expect="human")
    assert (await chat_ok(client, "s1", "Thanks", if_busy="reject"))["message"] == ANSWER
    assert len(llm.requests) == 2


async def test_a_hold_is_per_tenant_and_per_live_session(service: Any, llm: ScriptedLLM, redis_url: str) -> None:
    client = await _redis_service(service, llm, redis_url, session_ttl_seconds=3600)

    async def idle(tenant: str, session: str) -> None:
        raw = aioredis.Redis.from_url(redis_url)
        try:
            await raw.hset(tenant_key(tenant, "sess", session), "last_activity", "1000")
        finally:
            await raw.aclose()

    await hold_is_per_tenant_and_per_live_session(client, llm, idle)


async def test_with_handoff_disabled_a_stored_mode_holds_nothing_back_on_redis(
        service: Any, llm: ScriptedLLM, redis_url: str) -> None:
    client = await _redis_service(service, llm, redis_url, handoff_enabled=False)
    await chat_ok(client, "s1", "Hi")
    assert await client.app[SESSIONS].set_mode("default", "s1", "human")
    assert (await chat_ok(client, "s1", "Hi again"))["message"] == ANSWER


async def test_a_new_message_still_settles_a_paused_step_first(service: Any, llm: ScriptedLLM,
                                                                 redis_url: str) -> None:
    client = await _redis_service(service, llm, redis_url, openai_api_key="k",
                                  tool_approval=("update_order_status",))
    await new_message_settles_a_paused_step_first(client, llm)


class _Monitor:
    """MONITOR on a raw connection: every command Redis runs, scripts' own marked ``[0 lua]``."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.lines: list[str] = []

    async def __aenter__(self) -> _Monitor:
        import asyncio
        from urllib.parse import urlsplit

        parts = urlsplit(self.url)
        self._reader, self._writer = await asyncio.open_connection(parts.hostname, parts.port)
        self._writer.write(b"MONITOR\r\n")
        assert (await self._reader.readline()).startswith(b"+OK")
        return self

    async def commands(self, marker: str) -> list[str]:
        """The commands seen until one names ``marker`` (sent by the test to mark the end)."""
        while True:
            line = (await self._reader.readline()).decode()
            if marker in line:
                return self.lines
            self.lines.append(line)

    async def __aexit__(self, *exc: object) -> None:
        self._writer.close()


async def test_a_turn_takes_its_profile_version_from_the_admit_step(service: Any, llm: ScriptedLLM,
                                                                    redis_url: str) -> None:
    """The admit script reads the tenant's current profile version: the turn applies the profile
    that version names (a change another instance made just before it included) and sends no
    look-up of its own."""
    from msev15.store.profiles import PROFILES
    from msev15.store.redis_profiles import RedisProfiles

    client = await _redis_service(service, llm, redis_url)
    assert (await chat_ok(client, "p1", "Hi"))["profile_version"] == 0
    other = RedisProfiles(redis_url)  # another instance's profile store
    try:
        assert await other.put("default", {"instructions": "Answer as Ada."}, "ops") == 1
        async with _Monitor(redis_url) as monitor:
            body = await chat_ok(client, "p1", "Who are you?")
            marker = aioredis.Redis.from_url(redis_url)
            await marker.get("end-of-turn-marker")
            await marker.aclose()
            seen = await monitor.commands("end-of-turn-marker")
        assert body["profile_version"] == 1
        assert llm.requests[-1]["messages"][0] == {"role": "system", "content": "Answer as Ada."}
        head = tenant_key("default", "profile")
        reads = [line for line in seen if f'"HGET" "{head}"' in line]
        assert reads and all("lua]" in line for line in reads), reads  # only inside the admit script
        assert await other.put("default", {"instructions": "Answer as Grace."}, "ops") == 2
        assert (await chat_ok(client, "p1", "And now?"))["profile_version"] == 2
        assert llm.requests[-1]["messages"][0]["content"] == "Answer as Grace."
        assert client.app[PROFILES] is not other
    finally:
        await other.close()
