"""The session caps through the real app, on every SESSION_STORE: open_sessions passes
SESSION_MAX_SESSIONS_PER_TENANT and SESSION_MAX_BYTES to each store, and /metrics reports the
store's sessions and evictions without I/O at scrape time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from msev15.config import Settings
from msev15.store.context import open_sessions
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
