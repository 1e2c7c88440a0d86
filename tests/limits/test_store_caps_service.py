"""The session caps through the real app, on every SESSION_STORE: the topology passes
SESSION_MAX_SESSIONS_PER_TENANT and SESSION_MAX_BYTES to each store, and /metrics reports the
store's sessions and evictions without I/O at scrape time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from msev15.config import Settings
from msev15.topology import open_sessions
from tests.conftest import assert_envelope, make_settings
from tests.limits.test_metrics import _samples, _value

KINDS = ["memory", "sqlite", "redis"]


def _store_settings(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    if kind == "sqlite":
        return {"session_store": "sqlite", "session_db_path": str(tmp_path / "sessions.db")}
    if kind == "redis":
        return {"session_store": "redis", "redis_url": request.getfixturevalue("redis_url")}
    return {"session_store": "memory"}


@pytest.mark.parametrize("kind", KINDS)
async def test_open_sessions_passes_every_cap(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    settings: Settings = make_settings(tmp_path, session_max_sessions=77, session_max_sessions_per_tenant=5,
                                       session_max_bytes=4_096, session_max_messages=20,
                                       **_store_settings(kind, request, tmp_path))
    store: Any = await open_sessions(settings)
    try:
        caps = store.store if kind == "memory" else store
        assert (caps.max_sessions, caps.max_sessions_per_tenant, caps.max_bytes, caps.max_messages) == (
            77, 5, 4_096, 20)
    finally:
        await store.close()


@pytest.mark.parametrize("kind", KINDS)
async def test_a_tenant_past_its_cap_loses_its_oldest_and_metrics_say_so(kind: str, service: Any,
                                                                         request: pytest.FixtureRequest,
                                                                         tmp_path: Path) -> None:
    client = await service(session_max_sessions_per_tenant=2, **_store_settings(kind, request, tmp_path))
    for name in ("first", "second", "third"):
        resp = await client.post("/api/v1/chat", json={"session_id": name, "message": "hi", "tenant_id": "t"})
        assert resp.status == 200, await resp.text()
    gone = await client.get("/api/v1/sessions/first/history", params={"tenant_id": "t"})
    assert gone.status == 404
    assert_envelope(await gone.json(), "Session not found")
    page = await (await client.get("/api/v1/sessions", params={"tenant_id": "t"})).json()
    assert [s["session_id"] for s in page["sessions"]] == ["third", "second"]
    samples = await _samples(client)
    assert _value(samples, "msev15_sessions", store=kind) == 2
    assert _value(samples, "msev15_sessions_evicted_total", store=kind) == 1


@pytest.mark.parametrize("kind", KINDS)
async def test_a_model_echoing_a_lone_surrogate_is_stored_by_every_store(kind: str, service: Any, llm: Any,
                                                                         request: pytest.FixtureRequest,
                                                                         tmp_path: Path) -> None:
    """A model can be talked into sending "\\ud800" (valid JSON, not encodable UTF-8), in its answer
    or in a tool call's arguments. SQLite's driver and Redis' Lua cjson refused it: the turn failed
    with 503 and the store looked broken. Every store now keeps it as U+FFFD."""
    from tests.llm_server import Call, Reply

    llm.push(Reply(tool_calls=[Call("get_order_by_id", '{"order_id": "ORD-\ud800"}')]))
    llm.push(Reply("no such order: \ud800 sorry"))
    client = await service(llm_provider="openai", openai_base_url=f"{llm.url}/v1", openai_api_key="sk-test-123456",
                           **_store_settings(kind, request, tmp_path))
    resp = await client.post("/api/v1/chat", json={"session_id": "s", "message": "find ORD-1", "tenant_id": "t"})
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["message"] == "no such order: \ud800 sorry"  # the client gets what the model said
    history = await (await client.get("/api/v1/sessions/s/history", params={"tenant_id": "t"})).json()
    assert [m["content"] for m in history["messages"]] == ["find ORD-1", "no such order: \ufffd sorry"]
    # The next turn sends the stored history back to the model: nothing in it breaks the request.
    llm.push(Reply("fine"))
    again = await client.post("/api/v1/chat", json={"session_id": "s", "message": "and now?", "tenant_id": "t"})
    assert again.status == 200, await again.text()
    assert any("ORD-\ufffd" in str(m) for m in llm.requests[-1]["messages"])
