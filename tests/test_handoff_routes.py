"""The operator routes, through the real app with API keys of each role in a real SQLite key
store: the queue, racing claims (one instance, and two instances on one Redis), operator
messages, release, every refusal with its envelope, and the history the model reads afterwards
(the scripted server refuses a history either OpenAI API would refuse)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from msev15.app import create_app
from msev15.store.apikeys import SqliteApiKeyStore
from tests.conftest import assert_envelope, make_settings, sse_events
from tests.instances import two_apps
from tests.llm_server import Call, Reply, ScriptedLLM

HANDOFF = Call("handoff_to_human", {"reason": "Customer asked for a person", "summary": "Refund for ORD-1"})
OPERATOR_ROUTES = [("GET", "/api/v1/handoffs"), ("POST", "/api/v1/handoffs/s1/claim"),
                   ("POST", "/api/v1/handoffs/s1/messages"), ("POST", "/api/v1/handoffs/s1/release")]


@dataclass
class Keys:
    customer: str
    alice: str
    bob: str
    admin: str
    globex: str

    def __getitem__(self, who: str) -> dict[str, str]:
        return {"X-API-Key": getattr(self, who)}


async def _keys(db: Path) -> Keys:
    store = SqliteApiKeyStore(db)
    try:
        made = [(await store.create(tenant, name, role))[1] for tenant, name, role in (
            ("acme", "web-app", "customer"), ("acme", "Alice", "operator"), ("acme", "Bob", "operator"),
            ("acme", "Root", "admin"), ("globex", "Gina", "operator"))]
        return Keys(*made)
    finally:
        await store.close()


Start = Callable[..., Awaitable[tuple[TestClient, Keys]]]


@pytest.fixture
def start(aiohttp_client: Any, tmp_path: Path) -> Start:
    async def start_(**overrides: Any) -> tuple[TestClient, Keys]:
        db = tmp_path / "keys.db"
        keys = await _keys(db)
        settings = make_settings(tmp_path, auth_mode="api_key", api_keys_db_path=str(db), api_keys_cache_seconds=0,
                                 **overrides)
        return await aiohttp_client(await create_app(settings)), keys

    return start_


async def _hand_off(client: TestClient, keys: Keys, session: str = "s1") -> None:
    resp = await client.post("/api/v1/chat/stream", headers=keys["customer"],
                             json={"session_id": session, "message": "I want to talk to a person"})
    events = sse_events(await resp.text())
    assert events[-2]["type"] == "handoff" and events[-1]["status"] == "with_human", events


async def _history(client: TestClient, keys: Keys, session: str = "s1") -> dict[str, Any]:
    resp = await client.get(f"/api/v1/sessions/{session}/history", headers=keys["customer"])
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def test_an_operator_takes_over_writes_and_hands_back(start: Start) -> None:
    client, keys = await start()
    await _hand_off(client, keys)
    resp = await client.get("/api/v1/handoffs", headers=keys["alice"])
    [waiting] = (await resp.json())["handoffs"]
    assert (waiting["session_id"], waiting["status"], waiting["reason"]) == (
        "s1", "waiting", "Customer asked to talk to a person")
    assert waiting["summary"] == "I want to talk to a person" and waiting["waiting_seconds"] >= 0
    assert "claimed_by" not in waiting
    assert (await (await client.get("/api/v1/handoffs", headers=keys["globex"])).json()) == {"handoffs": []}

    resp = await client.post("/api/v1/handoffs/s1/claim", headers=keys["alice"])
    assert resp.status == 200 and await resp.json() == {"session_id": "s1", "status": "active", "claimed_by": "Alice"}
    assert (await _history(client, keys))["mode"] == "human"
    [active] = (await (await client.get("/api/v1/handoffs?status=active", headers=keys["bob"])).json())["handoffs"]
    assert active["claimed_by"] == "Alice" and active["claimed_at"].endswith("Z")
    resp = await client.post("/api/v1/handoffs/s1/claim", headers=keys["bob"])
    assert resp.status == 409
    body = await resp.json()
    assert_envelope(body, "already_claimed")
    assert body["claimed_by"] == "Alice"

    resp = await client.post("/api/v1/handoffs/s1/messages", json={"content": "Hi, Alice here."}, headers=keys["alice"])
    assert resp.status == 201
    message_id = (await resp.json())["message_id"]
    assert isinstance(message_id, str) and message_id
    resp = await client.post("/api/v1/handoffs/s1/messages", json={"content": "Bob here"}, headers=keys["bob"])
    assert resp.status == 403
    assert_envelope(await resp.json(), "forbidden")
    chat = await client.post("/api/v1/chat", json={"session_id": "s1", "message": "Thanks Alice"},
                             headers=keys["customer"])
    assert (await chat.json())["mode"] == "human"

    resp = await client.post("/api/v1/handoffs/s1/release", json={"note": "Done."}, headers=keys["bob"])
    assert resp.status == 403
    resp = await client.post("/api/v1/handoffs/s1/release", json={"note": "Refund approved."}, headers=keys["alice"])
    assert resp.status == 200 and await resp.json() == {"session_id": "s1", "status": "released", "mode": "agent"}
    history = await _history(client, keys)
    assert history["mode"] == "agent"
    alice = {"type": "human", "id": history["messages"][2]["author"]["id"], "name": "Alice"}
    assert [(m["role"], m["content"], m.get("author")) for m in history["messages"][2:]] == [
        ("assistant", "Hi, Alice here.", alice), ("user", "Thanks Alice", None),
        ("assistant", "Refund approved.", alice)]
    resp = await client.post("/api/v1/handoffs/s1/messages", json={"content": "late"}, headers=keys["alice"])
    assert resp.status == 409
    assert_envelope(await resp.json(), "not_active")
    statuses = (await (await client.get("/api/v1/handoffs?status=all", headers=keys["alice"])).json())["handoffs"]
    assert [h["status"] for h in statuses] == ["released"]


async def test_operator_routes_refuse_customers_and_other_tenants(start: Start) -> None:
    client, keys = await start()
    await _hand_off(client, keys)
    for method, path in OPERATOR_ROUTES:
        resp = await client.request(method, path, json={"content": "x"} if "messages" in path else None,
                                    headers=keys["customer"])
        assert resp.status == 403, (path, await resp.text())
        body = await resp.json()
        assert_envelope(body, "forbidden")
        assert body["required_role"] == "operator"
    for method, path in OPERATOR_ROUTES[1:]:  # globex's operator: acme's session does not exist for it
        resp = await client.request(method, path, json={"content": "x"} if "messages" in path else None,
                                    headers=keys["globex"])
        assert resp.status == 404, (path, await resp.text())
        assert_envelope(await resp.json(), "Session not found")
    assert (await _history(client, keys))["mode"] == "waiting_for_human"  # nothing changed


async def test_bad_input_on_the_operator_routes(start: Start) -> None:
    client, keys = await start(max_message_chars=30)
    await _hand_off(client, keys)
    assert (await client.post("/api/v1/handoffs/s1/claim", headers=keys["alice"])).status == 200
    cases = [
        ("GET", "/api/v1/handoffs?status=pending", None, "status"),
        ("POST", "/api/v1/handoffs/s1/messages", {}, "content"),
        ("POST", "/api/v1/handoffs/s1/messages", {"content": "   "}, "content"),
        ("POST", "/api/v1/handoffs/s1/messages", {"content": 7}, "content"),
        ("POST", "/api/v1/handoffs/s1/messages", {"content": "x" * 31}, "content"),
        ("POST", "/api/v1/handoffs/s1/messages", {"content": "hi", "author": "Eve"}, "author"),
        ("POST", "/api/v1/handoffs/s1/release", {"note": 5}, "note"),
        ("POST", "/api/v1/handoffs/bad%20id/claim", None, "session_id"),
    ]
    for method, path, body, field in cases:
        resp = await client.request(method, path, json=body, headers=keys["alice"])
        assert resp.status == 400, (path, body, await resp.text())
        got = await resp.json()
        assert_envelope(got, "validation_error")
        assert got["field"] == field
    resp = await client.post("/api/v1/handoffs/nope/claim", headers=keys["alice"])
    assert resp.status == 404
    resp = await client.post("/api/v1/handoffs/s1/release", headers=keys["alice"])  # no body: no note
    assert resp.status == 200
    resp = await client.post("/api/v1/handoffs/s1/release", headers=keys["alice"])
    assert resp.status == 409
    assert_envelope(await resp.json(), "not_active")


async def test_an_operator_may_take_over_a_session_the_agent_has(start: Start) -> None:
    client, keys = await start()
    resp = await client.post("/api/v1/chat", json={"session_id": "s2", "message": "Hello"}, headers=keys["customer"])
    assert resp.status == 200
    resp = await client.post("/api/v1/handoffs/s2/claim", headers=keys["bob"])
    assert resp.status == 200 and (await resp.json())["claimed_by"] == "Bob"
    assert (await _history(client, keys, "s2"))["mode"] == "human"
    # An admin may release what another operator holds.
    resp = await client.post("/api/v1/handoffs/s2/release", headers=keys["admin"])
    assert resp.status == 200


async def test_racing_claims_on_one_instance_have_one_winner(start: Start) -> None:
    client, keys = await start()
    await _hand_off(client, keys)
    responses = await asyncio.gather(*(client.post("/api/v1/handoffs/s1/claim", headers=keys[who])
                                       for who in ("alice", "bob", "admin")))
    assert sorted(r.status for r in responses) == [200, 409, 409]


async def test_racing_claims_across_two_instances_on_redis(aiohttp_client: Any, tmp_path: Path, redis_url: str) -> None:
    clients = await two_apps(aiohttp_client, tmp_path, redis_url, auth_mode="api_key", api_keys_cache_seconds=0)
    from msev15.store.redis_apikeys import RedisApiKeyStore  # keys live in Redis with SESSION_STORE=redis
    store = RedisApiKeyStore(redis_url)
    try:
        customer = (await store.create("acme", "web", "customer"))[1]
        operators = [(await store.create("acme", f"op{i}", "operator"))[1] for i in range(4)]
    finally:
        await store.close()
    for round_ in range(3):
        session = f"s{round_}"
        resp = await clients[0].post("/api/v1/chat", json={"session_id": session, "message": "talk to a person"},
                                     headers={"X-API-Key": customer})
        assert (await resp.json())["status"] == "with_human"
        queue = await (await clients[1].get("/api/v1/handoffs", headers={"X-API-Key": operators[0]})).json()
        assert session in [h["session_id"] for h in queue["handoffs"]]  # the other instance sees it
        responses = await asyncio.gather(*(clients[i % 2].post(f"/api/v1/handoffs/{session}/claim",
                                                                headers={"X-API-Key": key})
                                           for i, key in enumerate(operators)))
        assert sorted(r.status for r in responses) == [200, 409, 409, 409]


@pytest.mark.parametrize("api", ["chat", "responses"])
async def test_after_release_the_model_reads_the_whole_conversation(start: Start, llm: ScriptedLLM, api: str) -> None:
    client, keys = await start(llm_provider="openai", llm_api=api, openai_base_url=f"{llm.url}/v1", llm_max_retries=0)
    llm.push(Reply(tool_calls=[HANDOFF]), Reply("Glad it is sorted."))
    resp = await client.post("/api/v1/chat", json={"session_id": "s1", "message": "A person please"},
                             headers=keys["customer"])
    assert (await resp.json())["status"] == "with_human"
    await client.post("/api/v1/chat", json={"session_id": "s1", "message": "Still there?"}, headers=keys["customer"])
    await client.post("/api/v1/handoffs/s1/claim", headers=keys["alice"])
    await client.post("/api/v1/handoffs/s1/messages", json={"content": "Your refund is on its way."},
                      headers=keys["alice"])
    await client.post("/api/v1/handoffs/s1/release", json={"note": "Refund issued, REF-77."}, headers=keys["alice"])
    resp = await client.post("/api/v1/chat", json={"session_id": "s1", "message": "Great, thanks"},
                             headers=keys["customer"])
    assert resp.status == 200, await resp.text()  # the scripted server refuses an invalid history
    assert (await resp.json())["message"] == "Glad it is sorted."
    sent = str(llm.requests[-1])
    for text in ("Still there?", "Your refund is on its way.", "Refund issued, REF-77.", "Great, thanks"):
        assert text in sent


async def test_handoff_metrics(service) -> None:
    client = await service()
    for session in ("m1", "m2"):
        await client.post("/api/v1/chat", json={"session_id": session, "message": "I want to talk to a person"})
    await client.post("/api/v1/handoffs/m1/claim")
    await client.post("/api/v1/handoffs/m1/release")
    await client.post("/api/v1/handoffs/m2/claim")
    text = await (await client.get("/metrics")).text()
    lines = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
             if line.startswith("msev15_handoff")}
    assert lines['msev15_handoffs_total{outcome="claimed"}'] == 2
    assert lines['msev15_handoffs_total{outcome="released"}'] == 1
    assert lines["msev15_handoff_wait_seconds_count"] == 2
    assert lines["msev15_handoff_with_human_seconds_count"] == 1
