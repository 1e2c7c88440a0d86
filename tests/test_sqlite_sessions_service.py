"""The service on the SQLite session store: history across app restarts, readiness, and what a
client sees when the database cannot be written (a really full database, not a simulated one)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from msev15.app import create_app
from msev15.cli import main
from msev15.store.base import SESSIONS
from msev15.store.session_schema import SessionDatabaseError
from msev15.store.sqlite_sessions import SqliteSessions
from tests.conftest import assert_envelope, make_settings, sse_events

NO_LIMIT = 4294967294


async def _page_limit(client: Any, pages: int) -> None:
    """Cap the database file at ``pages`` (SQLite keeps it at least at its current size): every
    write that needs a new page then fails with SQLITE_FULL, as on a full disk. The pragma belongs
    to a connection, so it is set on the store's own; nothing of the store is replaced."""
    store = client.app[SESSIONS]
    assert isinstance(store, SqliteSessions)
    await store._sqlite.connection().execute_fetchall(f"PRAGMA max_page_count = {pages:d}")


async def test_history_survives_an_app_restart(tmp_path: Path, aiohttp_client: Any) -> None:
    settings = make_settings(tmp_path, session_store="sqlite", session_db_path=str(tmp_path / "s" / "sessions.db"))
    first = await aiohttp_client(await create_app(settings))
    for text in ("hello", "where is my order ORD-12345678?"):
        resp = await first.post("/api/v1/chat", json={"session_id": "keep", "message": text})
        assert resp.status == 200, await resp.text()
    before = await (await first.get("/api/v1/sessions/keep/history")).json()
    await first.close()
    second = await aiohttp_client(await create_app(settings))
    after = await (await second.get("/api/v1/sessions/keep/history")).json()
    assert after == before and after["message_count"] == 4
    listed = await (await second.get("/api/v1/sessions")).json()
    assert listed["total"] == 1 and listed["sessions"][0]["message_count"] == 4
    resp = await second.post("/api/v1/chat", json={"session_id": "keep", "message": "thanks"})
    assert (await resp.json())["message_count"] == 6


async def test_readiness_names_the_store(service: Any) -> None:
    client = await service(session_store="sqlite")
    body = await (await client.get("/health/readiness")).json()
    assert body["status"] == "ready" and body["checks"]["session_store"] == "healthy"


async def test_a_full_database_answers_503_store_unavailable_and_readiness_says_so(service: Any,
                                                                                    tmp_path: Path) -> None:
    client = await service(session_store="sqlite", session_db_path=str(tmp_path / "sessions.db"))
    ok = await client.post("/api/v1/chat", json={"session_id": "s", "message": "hello"})
    assert ok.status == 200
    await _page_limit(client, 1)
    big = "please check order ORD-12345678 " + "x" * 12_000  # needs new pages
    resp = await client.post("/api/v1/chat", json={"session_id": "s", "message": big})
    assert resp.status == 503
    assert_envelope(await resp.json(), "store_unavailable")
    stream = await client.post("/api/v1/chat/stream", json={"session_id": "new", "message": big})
    events = sse_events(await stream.text())
    assert events[-1]["type"] == "error" and events[-1]["error"] == "store_unavailable"
    assert [e["type"] for e in events].count("done") == 0

    ready = await client.get("/health/readiness")
    body = await ready.json()
    assert ready.status == 503 and body["status"] == "not_ready"
    assert body["checks"]["session_store"] == "unavailable"
    assert "Session store (sqlite) is unavailable: new answers cannot be saved" in body["warnings"]
    # What was saved is still there, exactly as before the failed turns.
    history = await (await client.get("/api/v1/sessions/s/history")).json()
    assert history["message_count"] == 2 and history["messages"][0]["content"] == "hello"
    assert (await client.get("/api/v1/sessions/new/history")).status == 404

    await _page_limit(client, NO_LIMIT)  # space again: the next write succeeds and readiness follows
    resp = await client.post("/api/v1/chat", json={"session_id": "s", "message": big})
    assert resp.status == 200 and (await resp.json())["message_count"] == 4
    ready = await client.get("/health/readiness")
    assert ready.status == 200 and (await ready.json())["checks"]["session_store"] == "healthy"


async def test_a_closed_store_answers_503_on_history_and_listing(service: Any) -> None:
    client = await service(session_store="sqlite")
    assert (await client.post("/api/v1/chat", json={"session_id": "s", "message": "hello"})).status == 200
    await client.app[SESSIONS].close()
    for method, path in (("GET", "/api/v1/sessions/s/history"), ("GET", "/api/v1/sessions"),
                         ("DELETE", "/api/v1/sessions/s")):
        resp = await client.request(method, path)
        assert resp.status == 503, path
        assert_envelope(await resp.json(), "store_unavailable")
    resp = await client.post("/api/v1/chat", json={"session_id": "s", "message": "hello"})
    assert resp.status == 503
    assert_envelope(await resp.json(), "store_unavailable")


async def test_a_newer_database_stops_the_start_with_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "sessions.db"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 99")
    server = TestServer(await create_app(make_settings(tmp_path, session_store="sqlite", session_db_path=str(path))))
    try:
        with pytest.raises(SessionDatabaseError, match="schema version 99, newer than this program supports"):
            await server.start_server()
    finally:
        await server.close()


def test_config_command_shows_the_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    env = tmp_path / ".env"
    env.write_text(f"SESSION_STORE=sqlite\nSESSION_DB_PATH={tmp_path / 'db' / 'sessions.db'}\n")
    assert main(["config", "--env-file", str(env)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "SESSION_STORE=sqlite" in out and f"SESSION_DB_PATH={tmp_path / 'db' / 'sessions.db'}" in out
