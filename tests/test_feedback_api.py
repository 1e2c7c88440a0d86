"""Answer feedback over HTTP: rate, replace, other tenants, after the stream's retention, listing."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from msev15.events.turnlog import TURNS
from msev15.store.feedback import FEEDBACK
from tests.llm_server import Reply, ScriptedLLM


async def _turn(client: TestClient, session: str = "s1", tenant: str = "acme", message: str = "hello") -> str:
    resp = await client.post("/api/v1/chat", json={"session_id": session, "message": message, "tenant_id": tenant})
    assert resp.status == 200, await resp.text()
    return str((await resp.json())["turn_id"])


async def _rate(client: TestClient, turn_id: str, body: dict[str, Any], *, session: str = "s1",
                tenant: str | None = "acme") -> tuple[int, dict[str, Any]]:
    query = f"?tenant_id={tenant}" if tenant else ""
    resp = await client.post(f"/api/v1/sessions/{session}/turns/{turn_id}/feedback{query}", json=body)
    return resp.status, await resp.json()


def _error(status: int, body: dict[str, Any], expected_status: int, error: str) -> None:
    assert status == expected_status, body
    assert body["error"] == error and body["message"] and body["request_id"] and body["timestamp"]


async def test_rate_then_replace_then_list(service) -> None:
    client = await service()
    turn_id = await _turn(client)
    status, body = await _rate(client, turn_id, {"rating": "up", "comment": "Quick and right."})
    assert status == 201, body
    assert body | {"created_at": "-"} == {"session_id": "s1", "turn_id": turn_id, "rating": "up",
                                         "comment": "Quick and right.", "caller": "anonymous", "created_at": "-"}
    status, body = await _rate(client, turn_id, {"rating": "down"})
    assert status == 200 and body["rating"] == "down" and body["comment"] is None, body

    listed = await (await client.get("/api/v1/feedback?tenant_id=acme")).json()
    assert listed["tenant_id"] == "acme"
    assert [(f["turn_id"], f["rating"]) for f in listed["feedback"]] == [(turn_id, "down")]
    metrics = await (await client.get("/metrics")).text()
    assert 'msev15_feedback_total{rating="up"} 1.0' in metrics
    assert 'msev15_feedback_total{rating="down"} 1.0' in metrics


async def test_unknown_and_other_tenants_turns_are_not_found(service) -> None:
    client = await service()
    turn_id = await _turn(client, tenant="acme")
    _error(*await _rate(client, turn_id, {"rating": "up"}, tenant="globex"), 404, "turn_not_found")
    _error(*await _rate(client, turn_id, {"rating": "up"}, session="s2"), 404, "turn_not_found")
    _error(*await _rate(client, "no-such-turn", {"rating": "up"}), 404, "turn_not_found")
    listed = await (await client.get("/api/v1/feedback?tenant_id=globex")).json()
    assert listed["feedback"] == []


async def test_a_failed_turn_cannot_be_rated(service, tmp_path: Path) -> None:
    async with ScriptedLLM() as llm:
        llm.push(Reply(status=500))
        client = await service(llm_provider="openai", openai_base_url=llm.url + "/v1", llm_max_retries=0)
        resp = await client.post("/api/v1/chat/stream", json={"session_id": "s1", "message": "hi", "tenant_id": "acme"})
        turn_id = resp.headers["X-Turn-ID"]
        await resp.read()
        _error(*await _rate(client, turn_id, {"rating": "down"}), 404, "turn_not_found")


async def test_rating_after_the_turns_stream_is_no_longer_retained(service) -> None:
    # No retention: a finished turn leaves the turn log at the log's next look at the clock.
    client = await service(stream_retention_seconds=0)
    turn_id = await _turn(client)
    assert await client.app[TURNS].find("acme", "s1", turn_id) is None, "the stream is still retained"
    store = client.app[FEEDBACK]
    deadline = asyncio.get_running_loop().time() + 5
    while not await store.known("acme", "s1", turn_id):  # the index is written by a bus subscriber
        assert asyncio.get_running_loop().time() < deadline, "the completed turn was never indexed"
        await asyncio.sleep(0.01)
    status, body = await _rate(client, turn_id, {"rating": "down", "comment": "Late, but true."})
    assert status == 201, body
    _error(*await _rate(client, turn_id, {"rating": "up"}, tenant="globex"), 404, "turn_not_found")


async def test_ratings_survive_a_restart_with_sqlite(service, tmp_path: Path) -> None:
    db = str(tmp_path / "sessions.db")
    first = await service(session_store="sqlite", session_db_path=db)
    turn_id = await _turn(first)
    assert (await _rate(first, turn_id, {"rating": "up"}))[0] == 201
    await first.close()
    second = await service(session_store="sqlite", session_db_path=db)
    listed = await (await second.get("/api/v1/feedback?tenant_id=acme")).json()
    assert [f["turn_id"] for f in listed["feedback"]] == [turn_id]
    assert (await _rate(second, turn_id, {"rating": "down"}))[0] == 200, "the index of completed turns is durable too"


async def test_bad_ratings_get_the_envelope(service) -> None:
    client = await service()
    turn_id = await _turn(client)
    _error(*await _rate(client, turn_id, {"rating": "meh"}), 400, "validation_error")
    _error(*await _rate(client, turn_id, {}), 400, "validation_error")
    _error(*await _rate(client, turn_id, {"rating": "up", "comment": "x" * 2001}), 400, "validation_error")
    _error(*await _rate(client, turn_id, {"rating": "up", "comment": 5}), 400, "validation_error")
    _error(*await _rate(client, turn_id, {"rating": "up", "stars": 5}), 400, "validation_error")
    status, _ = await _rate(client, turn_id, {"rating": "up", "comment": "x" * 2000})
    assert status == 201


async def test_listing_filters_and_bad_filters(service) -> None:
    client = await service()
    turns = [await _turn(client, message=f"hello {i}") for i in range(3)]
    for turn_id, rating in zip(turns, ["up", "down", "up"], strict=True):
        assert (await _rate(client, turn_id, {"rating": rating}))[0] == 201
    got = await (await client.get("/api/v1/feedback?tenant_id=acme&rating=up")).json()
    assert [f["turn_id"] for f in got["feedback"]] == [turns[2], turns[0]]
    got = await (await client.get("/api/v1/feedback?tenant_id=acme&limit=1")).json()
    assert [f["turn_id"] for f in got["feedback"]] == [turns[2]]
    got = await (await client.get("/api/v1/feedback?tenant_id=acme&since=2999-01-01T00:00:00Z")).json()
    assert got["feedback"] == []
    for query in ("rating=meh", "since=yesterday", "since=2026-01-01T00:00:00", "limit=0", "limit=501"):
        resp = await client.get(f"/api/v1/feedback?tenant_id=acme&{query}")
        _error(resp.status, await resp.json(), 400, "validation_error")


async def test_deleting_the_session_deletes_its_ratings(service) -> None:
    client = await service()
    kept, dropped = await _turn(client, session="keep"), await _turn(client, session="drop")
    assert (await _rate(client, kept, {"rating": "up"}, session="keep"))[0] == 201
    private = {"rating": "down", "comment": "call me on 555-0100"}
    assert (await _rate(client, dropped, private, session="drop"))[0] == 201
    resp = await client.delete("/api/v1/sessions/drop?tenant_id=acme")
    assert resp.status == 200, await resp.text()
    listed = await (await client.get("/api/v1/feedback?tenant_id=acme")).json()
    assert [f["session_id"] for f in listed["feedback"]] == ["keep"]
    _error(*await _rate(client, dropped, {"rating": "up"}, session="drop"), 404, "turn_not_found")


async def test_with_api_keys_each_key_is_a_caller_and_the_tenant_is_the_keys(service, tmp_path: Path) -> None:
    from tests.security.authkit import create_keys

    db = tmp_path / "keys.db"
    first_id, first = (await create_keys(db, "acme"))["acme"]
    second_id, second = (await create_keys(db, "acme"))["acme"]
    _, other = (await create_keys(db, "globex"))["globex"]
    _, operator = (await create_keys(db, "acme", role="operator"))["acme"]
    _, other_operator = (await create_keys(db, "globex", role="operator"))["globex"]
    client = await service(auth_mode="api_key", api_keys_db_path=str(db))

    async def call(method: str, path: str, key: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        resp = await client.request(method, path, json=body, headers={"Authorization": f"Bearer {key}"})
        return resp.status, await resp.json()

    status, answer = await call("POST", "/api/v1/chat", first, {"session_id": "s1", "message": "hello"})
    assert status == 200, answer
    path = f"/api/v1/sessions/s1/turns/{answer['turn_id']}/feedback"
    status, rated = await call("POST", path, first, {"rating": "up"})
    assert (status, rated["caller"]) == (201, first_id)
    assert (await call("POST", path, second, {"rating": "down"}))[0] == 201, "another key: another caller"
    assert (await call("POST", path, first, {"rating": "down"}))[0] == 200
    status, body = await call("POST", path, other, {"rating": "up"})
    _error(status, body, 404, "turn_not_found")  # globex's key: acme's turn does not exist for it
    status, body = await call("POST", path + "?tenant_id=acme", other, {"rating": "up"})
    _error(status, body, 403, "tenant_mismatch")
    status, body = await call("GET", "/api/v1/feedback", second)
    _error(status, body, 403, "forbidden")  # a customer key rates; reading the tenant's ratings is an operator's
    status, listed = await call("GET", "/api/v1/feedback", operator)
    assert listed["tenant_id"] == "acme"
    assert sorted((f["caller"], f["rating"]) for f in listed["feedback"]) == sorted(
        [(first_id, "down"), (second_id, "down")])
    assert (await call("GET", "/api/v1/feedback", other_operator))[1]["feedback"] == []  # another tenant's
