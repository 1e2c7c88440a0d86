"""SESSION_STORE=redis on a real three-master Redis Cluster (``REDIS_URL=redis+cluster://…``).

Every multi-key script and transaction keeps its keys in one hash slot (checked with CLUSTER
KEYSLOT for several tenants and sessions, key builder by key builder); the turn log's and the
session queue's own tests run on the cluster (imported from their modules, with this module's
fixtures); and two instances share sessions, queues, streams and cancels through it. The global
keys (session accounting, instance heartbeats, the pending-call deadlines, the API key index) are
single-key commands or scripts on their own slot. One cluster serves the whole run, emptied
before each test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient

from msev15.events.redis_turnlog import RedisTurnLog
from msev15.events.redis_turnlog import _keys as turn_keys
from msev15.store import redis_session_events
from msev15.store.redis_apikeys import RedisApiKeyStore
from msev15.store.redis_feedback import RedisFeedback
from msev15.store.redis_handoffs import RedisHandoffs
from msev15.store.redis_kit import connect, is_cluster, tenant_key
from msev15.store.redis_sessions import TENANT_COUNTS, TOTAL, RedisSessions
from tests.conftest import make_settings
from tests.llm_server import ScriptedLLM
from tests.redis_cluster import RedisCluster
from tests.test_redis_instances import (  # noqa: F401  (collected here, run on the cluster)
    test_a_stream_started_on_a_resumes_on_b,
    test_cancel_and_if_busy_work_from_the_other_instance,
    test_chat_on_a_then_history_list_and_delete_on_b,
    test_session_cancel_from_b_counts_turns_on_a,
    test_the_per_tenant_rate_limit_is_shared_across_instances,
    test_turns_from_both_instances_run_one_at_a_time_in_arrival_order,
)
from tests.test_redis_writethrough import (  # noqa: F401
    test_a_reader_sees_an_event_only_once_redis_has_it,
    test_a_retried_write_adds_each_event_once,
    test_a_turn_declared_lost_elsewhere_ends_with_that_one_event,
)

TENANTS = ["default", "acme", "t-7", "Zeta_corp", "x"]
SESSIONS = ["s", "a-b-c", "0d1f3c2e9a", "session_42"]


@pytest.fixture
def redis_url(redis_cluster: RedisCluster) -> str:
    return redis_cluster.url


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = connect(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def owner(redis_url: str) -> AsyncIterator[RedisTurnLog]:
    log = RedisTurnLog(redis_url, "owner", 300, 10_000)
    log.start()
    yield log
    await log.close()


@pytest.fixture
def pair(aiohttp_client: Any, tmp_path: Path, redis_url: str, llm: ScriptedLLM) -> Any:
    async def start(**overrides: Any) -> tuple[TestClient, TestClient]:
        from msev15.app import create_app

        clients = []
        for name in ("a", "b"):
            settings = make_settings(tmp_path / name, session_store="redis", redis_url=redis_url,
                                     llm_provider="openai", openai_base_url=f"{llm.url}/v1", llm_max_retries=0,
                                     **overrides)
            clients.append(await aiohttp_client(await create_app(settings)))
        return clients[0], clients[1]

    return start


def _script_keys(tenant: str, session: str) -> dict[str, list[str]]:
    """The KEYS of every multi-key script and transaction, as the stores build them."""
    sessions = RedisSessions(aioredis.Redis())  # only its key builder is used (no connection)
    turn = "0123456789abcdef"
    return {
        "sessions COMMIT": [*sessions._keys(tenant, session), tenant_key(tenant, "queue", session)],
        "sessions DELETE": list(sessions._keys(tenant, session)),
        "sessions get/context (MULTI)": list(sessions._keys(tenant, session)[:2]),
        "sessions SETTLE (global slot)": [TENANT_COUNTS, TOTAL],
        "turn log EVENTS / MARK_LOST": list(turn_keys(tenant, turn)),
        "turn log OPEN (with the tenant's task index)": [turn_keys(tenant, turn)[0], tenant_key(tenant, "tasks")],
        "session stream APPEND": redis_session_events._keys(tenant, session),
        "handoffs REQUEST / CLAIM": RedisHandoffs._keys(tenant, session),
        "feedback RATE / FORGET": [tenant_key(tenant, "feedback"), tenant_key(tenant, "feedback", "time")],
    }


def test_every_multi_key_script_keeps_its_keys_in_one_slot(redis_cluster: RedisCluster) -> None:
    for tenant in TENANTS:
        for session in SESSIONS:
            for script, keys in _script_keys(tenant, session).items():
                slots = {redis_cluster.keyslot(key) for key in keys}
                assert len(slots) == 1, f"{script} spans slots {slots} for tenant {tenant!r}, session {session!r}"
    # ... and tenants really spread over the cluster: the slot is the tenant's, not one for all
    assert len({redis_cluster.keyslot(tenant_key(t, "index")) for t in TENANTS}) > 1


def test_a_cluster_url_is_recognised() -> None:
    assert is_cluster("redis+cluster://127.0.0.1:7000") and is_cluster("rediss+cluster://h:1")
    assert not is_cluster("redis://127.0.0.1:6379/0")


async def test_api_keys_work_on_the_cluster(redis_url: str) -> None:
    store = RedisApiKeyStore(redis_url)
    try:
        record, key = await store.create("acme", "ops", "operator")
        verified = await store.verify(key)
        assert verified is not None and verified.tenant_id == "acme" and verified.role == "operator"
        assert [k.id for k in await store.list()] == [record.id]
        assert await store.revoke(record.id) and await store.verify(key) is None
    finally:
        await store.close()


async def test_feedback_remembers_turns_of_many_tenants_in_one_batch(redis_url: str) -> None:
    from msev15.store.feedback import CompletedTurn

    store = RedisFeedback(redis_url)
    try:
        await store.remember([CompletedTurn(t, "s", f"turn-{t}", 1.0) for t in TENANTS])
        assert all([await store.known(t, "s", f"turn-{t}") for t in TENANTS])
        assert not await store.known("acme", "s", "turn-default")
    finally:
        await store._redis.aclose()


async def test_redis_cluster_true_makes_a_plain_url_a_cluster_node(
        aiohttp_client: Any, tmp_path: Path,
        redis_cluster: RedisCluster, llm: ScriptedLLM) -> None:
    from msev15.app import create_app
    from msev15.topology import redis_url as effective_url
    from msev15.topology import store_label

    plain = f"redis://127.0.0.1:{redis_cluster.ports[1]}"
    settings = make_settings(tmp_path, session_store="redis", redis_url=plain, redis_cluster=True,
                             llm_provider="openai", openai_base_url=f"{llm.url}/v1", llm_max_retries=0)
    assert effective_url(settings) == f"redis+cluster://127.0.0.1:{redis_cluster.ports[1]}"
    assert store_label(settings).startswith("redis cluster (127.0.0.1:")
    assert effective_url(settings.replace(redis_cluster=False)) == plain
    client = await aiohttp_client(await create_app(settings))
    for n in range(3):  # sessions land on different masters through the one node named
        resp = await client.post("/api/v1/chat", json={"session_id": f"s{n}", "message": "hello"})
        assert resp.status == 200, await resp.text()
    history = await client.get("/api/v1/sessions/s2/history")
    assert [m["role"] for m in (await history.json())["messages"]] == ["user", "assistant"]


def test_redis_cluster_true_refuses_a_unix_socket_url() -> None:
    from msev15.common.env import SettingsError
    from msev15.config import Settings

    with pytest.raises(SettingsError, match="REDIS_CLUSTER=true needs a redis://"):
        Settings.from_env({"SESSION_STORE": "redis", "REDIS_URL": "unix:///tmp/redis.sock", "REDIS_CLUSTER": "true"})
    with pytest.raises(SettingsError, match="REDIS_URL"):
        Settings.from_env({"SESSION_STORE": "redis", "REDIS_URL": "http://127.0.0.1:7000"})
    assert Settings.from_env({"SESSION_STORE": "redis", "REDIS_URL": "redis+cluster://127.0.0.1:7000"}).redis_url
