"""What hangs on a session goes with it, on every store (memory, SQLite, Redis): deleting a
session, or its TTL expiry, drops its ratings, its handoff record and its session stream's log
(store/cascade.py). Also the SessionEvents.forget contract (memory, Redis)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from msev15.store.base import SESSIONS
from msev15.store.context import sweep_once
from msev15.store.feedback import FEEDBACK
from msev15.store.handoffs import HANDOFFS
from msev15.store.redis_session_events import RedisSessionEvents
from msev15.store.session_events import SESSION_EVENTS, MemorySessionEvents, SessionEvents

ASK = "I want to talk to a person"
DEADLINE = 15.0  # a guard against a hang, never a measure


@pytest.fixture(params=["memory", "sqlite", "redis", "postgres"])
def store_kind(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    if request.param == "redis":
        return {"session_store": "redis", "redis_url": request.getfixturevalue("redis_url")}
    if request.param == "postgres":  # every record store on the database too
        return {"session_store": "postgres",
                "database_url": request.getfixturevalue("pg_cluster").create_database("cascade")}
    return {"session_store": request.param, "session_db_path": str(tmp_path / "sessions.db")}


async def _rated_handoff(client: TestClient, session: str) -> None:
    """A session with a rated turn that handed off (a handoff record) and a session-stream log."""
    resp = await client.post("/api/v1/chat", json={"session_id": session, "message": ASK})
    body = await resp.json()
    assert body["status"] == "with_human", body
    rated = await client.post(f"/api/v1/sessions/{session}/turns/{body['turn_id']}/feedback",
                              json={"rating": "down", "comment": "my words"})
    assert rated.status == 201, await rated.text()
    assert await client.app[HANDOFFS].get("default", session) is not None
    await client.app[SESSION_EVENTS].append("default", session, {"type": "mode", "mode": "human", "by": {}})


async def _what_hangs_on(client: TestClient, session: str) -> tuple[int, bool, list[Any]]:
    app = client.app
    ratings = [f for f in await app[FEEDBACK].list("default", limit=100) if f.session_id == session]
    events = await app[SESSION_EVENTS].read("default", session, 0, 0)
    return len(ratings), await app[HANDOFFS].get("default", session) is not None, [e for _, e in events]


async def test_deleting_a_session_drops_its_ratings_handoff_and_stream(service, store_kind: dict[str, Any]) -> None:
    client = await service(**store_kind)
    await _rated_handoff(client, "gone")
    await _rated_handoff(client, "kept")
    assert (await client.delete("/api/v1/sessions/gone")).status == 200
    # the log keeps only the last event, so open streams read it and end
    assert await _what_hangs_on(client, "gone") == (0, False, [{"type": "session_deleted"}])
    ratings, handoff, events = await _what_hangs_on(client, "kept")
    assert ratings == 1 and handoff and events


async def test_a_session_s_ttl_expiry_drops_its_ratings_handoff_and_stream(service,
                                                                           store_kind: dict[str, Any]) -> None:
    client = await service(session_ttl_seconds=1, **store_kind)
    await _rated_handoff(client, "idle")
    assert (await _what_hangs_on(client, "idle"))[0] == 1
    deadline = time.monotonic() + DEADLINE
    while await _what_hangs_on(client, "idle") != (0, False, []):  # expires in its own time (1 s)
        assert time.monotonic() < deadline, await _what_hangs_on(client, "idle")
        await sweep_once(client.app)  # the service's own sweeper may do it first: either is fine
        await asyncio.sleep(0.05)
    assert await client.app[SESSIONS].get("default", "idle") is None


async def test_an_id_in_use_again_keeps_what_it_has_now(service) -> None:
    client = await service(session_ttl_seconds=1)
    await _rated_handoff(client, "back")
    deadline = time.monotonic() + DEADLINE
    while await client.app[SESSIONS].get("default", "back") is not None:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    await client.post("/api/v1/chat", json={"session_id": "back", "message": "hello again"})  # before the sweep
    await sweep_once(client.app)
    ratings, handoff, _ = await _what_hangs_on(client, "back")
    assert ratings == 1 and handoff


@pytest.fixture(params=["memory", "redis"])
async def events(request: pytest.FixtureRequest) -> AsyncIterator[SessionEvents]:
    store: SessionEvents
    if request.param == "memory":
        store = MemorySessionEvents(300)
    else:
        store = RedisSessionEvents(request.getfixturevalue("redis_url"), 300)
    store.start()
    yield store
    await store.close()


async def test_forget_keeps_only_the_last_event_after_what_was_published(events: SessionEvents) -> None:
    for session in ("s", "other"):
        assert await events.last_id("t", session) == 0  # a reader watches both
    events.publish("t", "s", {"n": 1})
    events.publish("t", "s", {"n": 2})
    events.publish("t", "other", {"n": 1})
    await events.forget("t", "s", {"type": "session_deleted"})
    assert await events.read("t", "s", 0, 0) == [(3, {"type": "session_deleted"})]
    assert await events.read("t", "s", 2, 0) == [(3, {"type": "session_deleted"})]
    assert await events.read("t", "other", 0, 0) == [(1, {"n": 1})]
    await events.forget("t", "other")
    assert await events.last_id("t", "other") == 0 and await events.read("t", "other", 0, 0) == []


async def test_turn_events_are_kept_only_while_someone_watches(events: SessionEvents) -> None:
    events.publish("t", "s", {"n": "nobody reads this"})
    assert await events.append("t", "s", {"type": "mode"}) == 1  # what people do is always kept
    assert await events.last_id("t", "s") == 1  # a reader: from now on
    events.publish("t", "s", {"n": "read"})
    assert await events.append("t", "s", {"type": "human_message"}) == 3
    assert await events.read("t", "s", 0, 0) == [(1, {"type": "mode"}), (2, {"n": "read"}),
                                               (3, {"type": "human_message"})]
