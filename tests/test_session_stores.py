"""The session store contract, run against every implementation (memory, sqlite, redis, postgres).

Each test gets ``open_store(**limits)``: a fresh store of the parametrized kind with the given
TTL and caps, driven by the test's ``clock`` where the store can use one. Behaviour only one
implementation has (its failure modes, its files) is tested at the end, by kind.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from msev15.store import sqlite_sessions
from msev15.store.base import Sessions, StoreUnavailable
from msev15.store.memory import MemorySessions
from msev15.store.pg_kit import Database, open_database
from msev15.store.pg_sessions import PostgresSessions
from msev15.store.redis_sessions import RedisSessions
from msev15.store.session_schema import SCHEMA_VERSION, SessionDatabaseError
from msev15.store.sessions import Message, SessionStore
from msev15.store.sqlite_sessions import SqliteSessions
from tests.pg_server import PgCluster

KINDS = ["memory", "sqlite", "redis", "redis-cluster", "postgres"]


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


OpenStore = Callable[..., Awaitable[Sessions]]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=KINDS)
async def open_store(request: pytest.FixtureRequest, tmp_path: Path, clock: Clock) -> AsyncIterator[OpenStore]:
    """``await open_store(ttl=3600, max_messages=1000, max_sessions=250_000, real_time=False)``."""
    kind = request.param
    opened: list[Sessions] = []
    databases: list[Database] = []
    redis_url = ""
    if kind == "redis":
        redis_url = request.getfixturevalue("redis_url")
    elif kind == "redis-cluster":  # the same store on a three-master cluster (redis+cluster://)
        redis_url = request.getfixturevalue("redis_cluster").url
    cluster: PgCluster | None = request.getfixturevalue("pg_cluster") if kind == "postgres" else None

    async def open_(ttl: float = 3600, max_messages: int = 1000, max_sessions: int = 250_000,
                    real_time: bool = False, max_sessions_per_tenant: int = 0, max_bytes: int = 0) -> Sessions:
        tick: Callable[[], float] = time.time if real_time else clock
        caps: dict[str, Any] = dict(max_messages=max_messages, max_sessions=max_sessions,
                    max_sessions_per_tenant=max_sessions_per_tenant, max_bytes=max_bytes)
        store: Sessions
        if kind == "memory":
            store = MemorySessions(SessionStore(ttl, tick, **caps))
        elif kind == "sqlite":
            store = await SqliteSessions.open(tmp_path / f"sessions-{len(opened)}.db", ttl_seconds=ttl, clock=tick,
                                              **caps)
        elif cluster is not None:  # postgres: a fresh database for each store
            databases.append(await open_database(cluster.create_database("sessions")))
            store = await PostgresSessions.open(databases[-1], ttl_seconds=ttl, clock=tick, **caps)
        else:
            store = await RedisSessions.open(redis_url, ttl_seconds=ttl, clock=tick, **caps)
        opened.append(store)
        return store

    yield open_
    for store in opened:
        await store.close()
    for database in databases:
        await database.close()


def _tool_steps(*call_ids: str) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = []
    for cid in call_ids:
        steps.append({"role": "assistant", "content": None, "tool_calls": [
            {"id": cid, "type": "function",
             "function": {"name": "get_order_by_id", "arguments": "{\"order_id\": 1}"}}]})
        steps.append({"role": "tool", "tool_call_id": cid, "content": json.dumps({"order": {"id": cid}})})
    return steps


async def _commit(store: Sessions, clock: Clock, tenant: str, session: str, text: str = "hi",
                  steps: list[dict[str, Any]] | None = None) -> int:
    return await store.commit_turn(tenant, session, text, clock.now - 0.5, steps or [], f"answer to {text}")


async def _visible(store: Sessions, tenant: str, session: str) -> list[tuple[str, str | None]]:
    got = await store.get(tenant, session)
    assert got is not None
    return [(m.role, m.content) for m in got.messages if m.visible]


async def test_commit_and_read_back(open_store: OpenStore, clock: Clock) -> None:
    store = await open_store()
    assert await _commit(store, clock, "a", "s1", "one") == 2
    started = clock.now - 0.5
    clock.now += 10
    assert await _commit(store, clock, "a", "s1", "two") == 4
    session = await store.get("a", "s1")
    assert session is not None and session.session_id == "s1"
    assert [(m.role, m.content) for m in session.messages] == [
        ("user", "one"), ("assistant", "answer to one"), ("user", "two"), ("assistant", "answer to two")]
    assert [m.ts for m in session.messages] == [started, started + 0.5, clock.now - 0.5, clock.now]
    assert session.created_at == started and session.last_activity == clock.now
    assert session.visible_count == 4
    assert await store.count() == 1


async def test_unknown_session_is_none_everywhere(open_store: OpenStore) -> None:
    store = await open_store()
    assert await store.get("t", "nope") is None
    assert await store.context("t", "nope", 10) == []
    assert await store.delete("t", "nope") is None
    page = await store.page("t", 10, 0)
    assert page.total == 0 and page.sessions == []


async def test_tenants_are_isolated(open_store: OpenStore, clock: Clock) -> None:
    store = await open_store()
    await _commit(store, clock, "a", "shared-id", "for a")
    assert await store.get("b", "shared-id") is None
    assert await store.context("b", "shared-id", 10) == []
    assert await store.delete("b", "shared-id") is None
    assert (await store.page("b", 50, 0)).total == 0
    await _commit(store, clock, "b", "shared-id", "for b")
    assert await _visible(store, "a", "shared-id") == [("user", "for a"), ("assistant", "answer to for a")]
    assert await _visible(store, "b", "shared-id") == [("user", "for b"), ("assistant", "answer to for b")]
    assert await store.delete("b", "shared-id") == 2
    assert await store.get("a", "shared-id") is not None
    assert await store.count() == 1


async def test_page_newest_first_with_totals_at_every_offset(open_store: OpenStore, clock: Clock) -> None:
    store = await open_store()
    for i in range(7):
        clock.now += 1
        await _commit(store, clock, "t", f"s{i}")
        await _commit(store, clock, "other", f"o{i}")
    clock.now += 1
    await _commit(store, clock, "t", "s1", "again")  # activity moves s1 to the front
    newest_first = ["s1", "s6", "s5", "s4", "s3", "s2", "s0"]
    for offset in range(9):
        for limit in (1, 2, 3, 50):
            page = await store.page("t", limit, offset)
            assert page.total == 7
            assert [s.session_id for s in page.sessions] == newest_first[offset:offset + limit], (offset, limit)
    first = (await store.page("t", 1, 0)).sessions[0]
    assert (first.visible_count, first.last_activity, first.created_at) == (4, clock.now, 1_000_001.5)


async def test_equal_timestamps_keep_commit_order(open_store: OpenStore, clock: Clock) -> None:
    store = await open_store()
    for name in ("a", "b", "c"):
        await _commit(store, clock, "t", name)
    await _commit(store, clock, "t", "a")
    assert [s.session_id for s in (await store.page("t", 10, 0)).sessions] == ["a", "c", "b"]
    assert [s.session_id for s in (await store.page("t", 1, 2)).sessions] == ["b"]


async def test_delete_returns_visible_count(open_store: OpenStore, clock: Clock) -> None:
    store = await open_store()
    await _commit(store, clock, "t", "s", steps=_tool_steps("c1"))
    await _commit(store, clock, "t", "s")
    await _commit(store, clock, "t", "keep")
    assert await store.delete("t", "s") == 4
    assert await store.get("t", "s") is None
    assert await store.delete("t", "s") is None
    assert await store.count() == 1
    assert [s.session_id for s in (await store.page("t", 10, 0)).sessions] == ["keep"]
    assert await _commit(store, clock, "t", "s", "fresh") == 2  # a deleted id starts afresh


async def test_idle_sessions_expire(open_store: OpenStore, clock: Clock) -> None:
    store = await open_store(ttl=100)
    await _commit(store, clock, "t", "old")
    clock.now += 60
    await _commit(store, clock, "t", "new")
    clock.now += 50  # old idle 110 s, new idle 50 s
    assert await store.get("t", "old") is None
    assert await store.context("t", "old", 10) == []
    assert await store.delete("t", "old") is None
    page = await store.page("t", 50, 0)
    assert page.total == 1 and [s.session_id for s in page.sessions] == ["new"]
    assert await store.expire() in (0, 1)  # 0 where listing or the store itself already dropped it
    assert await store.count() == 1
    clock.now += 100
    await store.expire()
    assert await store.count() == 0 and await store.expire() == 0


async def test_expired_sessions_are_reported_once_for_what_hangs_on_them(open_store: OpenStore,
                                                                         clock: Clock) -> None:
    store = await open_store(ttl=100)
    await _commit(store, clock, "t", "old")
    await _commit(store, clock, "u", "only")
    await _commit(store, clock, "t", "deleted")
    clock.now += 60
    await _commit(store, clock, "t", "new")
    assert await store.delete("t", "deleted") is not None  # its route drops what hangs on it
    clock.now += 50
    await store.expire()
    assert sorted(await store.gone()) == [("t", "old"), ("u", "only")]
    assert await store.gone() == []
    clock.now += 100
    await store.expire()
    assert await store.gone() == [("t", "new")]


async def test_an_expired_session_starts_afresh(open_store: OpenStore, clock: Clock) -> None:
    store = await open_store(ttl=100)
    await _commit(store, clock, "t", "s", "before")
    clock.now += 200
    assert await _commit(store, clock, "t", "s", "after") == 2
    assert await _visible(store, "t", "s") == [("user", "after"), ("assistant", "answer to after")]
    assert await store.count() == 1


async def test_ttl_zero_never_expires(open_store: OpenStore, clock: Clock) -> None:
    store = await open_store(ttl=0)
    await _commit(store, clock, "t", "s")
    clock.now += 10 * 365 * 86400
    assert await store.expire() == 0
    assert await store.get("t", "s") is not None and (await store.page("t", 5, 0)).total == 1


async def test_expiry_in_real_time(open_store: OpenStore) -> None:
    store = await open_store(ttl=1, real_time=True)
    await store.commit_turn("t", "s", "hi", time.time(), [], "hello")
    assert await store.get("t", "s") is not None

    deadline = time.monotonic() + 10
    while await store.get("t", "s") is not None:  # bounded polling: Redis expires in its own time
        assert time.monotonic() < deadline, "the session did not expire"
        await asyncio.sleep(0.05)
    await store.expire()
    assert await store.count() == 0 and (await store.page("t", 5, 0)).total == 0


async def test_expiry_across_many_tenants_drops_only_what_expired(open_store: OpenStore, clock: Clock) -> None:
    store = await open_store(ttl=100)
    for i in range(30):
        await _commit(store, clock, f"tenant-{i}", "s")
    clock.now += 50
    await _commit(store, clock, "tenant-keep", "s")
    clock.now += 60
    assert await store.expire() in (0, 30)  # 0 from stores that expire by themselves
    assert await store.count() == 1 and await store.get("tenant-keep", "s") is not None


async def test_context_keeps_tool_exchange_and_never_starts_with_a_tool_result(open_store: OpenStore,
                                                                              clock: Clock) -> None:
    store = await open_store()
    await _commit(store, clock, "t", "s", "first", _tool_steps("c1"))
    await _commit(store, clock, "t", "s", "second")
    full = await store.context("t", "s", 100)
    assert [m["role"] for m in full] == ["user", "assistant", "tool", "assistant", "user", "assistant"]
    assert full[0] == {"role": "user", "content": "first"}
    assert full[1] == {"role": "assistant", "content": None, "tool_calls": _tool_steps("c1")[0]["tool_calls"]}
    assert full[2] == {"role": "tool", "tool_call_id": "c1", "content": json.dumps({"order": {"id": "c1"}})}
    assert full[3] == {"role": "assistant", "content": "answer to first"}
    # A window may start at the assistant's tool call (its result follows), never at a result.
    assert [m["role"] for m in await store.context("t", "s", 5)] == ["assistant", "tool", "assistant", "user",
                                                                     "assistant"]
    assert [m["role"] for m in await store.context("t", "s", 4)] == ["assistant", "user", "assistant"]
    session = await store.get("t", "s")
    assert session is not None and len(session.messages) == 6
    assert sum(m.visible for m in session.messages) == session.visible_count == 4
    assert [m.extra for m in session.messages][1:3] == [_tool_steps("c1")[0]["tool_calls"], "c1"]


async def test_one_turn_longer_than_the_window_still_gives_context(open_store: OpenStore, clock: Clock) -> None:
    store = await open_store()
    await _commit(store, clock, "t", "s", "long one", _tool_steps(*(f"c{i}" for i in range(6))))
    context = await store.context("t", "s", 6)
    assert [m["role"] for m in context] == ["assistant", "tool", "assistant", "tool", "assistant"]
    assert context[-1]["content"] == "answer to long one"


async def test_long_sessions_keep_their_latest_whole_turns(open_store: OpenStore, clock: Clock) -> None:
    store = await open_store(max_messages=10)
    for i in range(8):
        clock.now += 1
        count = await _commit(store, clock, "t", "s", f"m{i}")
    session = await store.get("t", "s")
    assert session is not None
    assert len(session.messages) <= 10 and session.messages[0].role == "user"
    assert [m.content for m in session.messages if m.role == "user"] == ["m3", "m4", "m5", "m6", "m7"]
    assert count == session.visible_count == 10
    assert (await store.page("t", 1, 0)).sessions[0].visible_count == 10
    assert session.created_at == 1_000_000.5  # trimming keeps the session's start


async def test_trimming_drops_tool_exchanges_with_their_turn(open_store: OpenStore, clock: Clock) -> None:
    store = await open_store(max_messages=10)
    await _commit(store, clock, "t", "s", "tools", _tool_steps("c1", "c2"))  # 6 messages, 2 visible
    await _commit(store, clock, "t", "s", "plain")  # 8
    assert await _commit(store, clock, "t", "s", "third", _tool_steps("c3")) == 4  # 12 > 10: "tools" goes
    session = await store.get("t", "s")
    assert session is not None
    assert [m.role for m in session.messages] == ["user", "assistant", "user", "assistant", "tool", "assistant"]
    assert session.visible_count == 4 == sum(m.visible for m in session.messages)
    assert (await store.context("t", "s", 100))[0] == {"role": "user", "content": "plain"}
    assert await store.delete("t", "s") == 4


async def test_the_least_recently_active_session_goes_beyond_the_cap(open_store: OpenStore, clock: Clock) -> None:
    store = await open_store(max_sessions=3)
    for name, tenant in (("a", "t1"), ("b", "t2"), ("c", "t1")):
        clock.now += 1
        await _commit(store, clock, tenant, name)
    clock.now += 1
    await _commit(store, clock, "t2", "b")  # b is active again; a is now the oldest
    clock.now += 1
    await _commit(store, clock, "t3", "d")
    assert await store.count() == 3
    assert await store.get("t1", "a") is None
    assert [s.session_id for s in (await store.page("t1", 10, 0)).sessions] == ["c"]
    assert (await store.page("t1", 10, 0)).total == 1
    assert await store.get("t2", "b") is not None and await store.get("t3", "d") is not None
    clock.now += 1
    await _commit(store, clock, "t3", "d")  # an existing session never evicts another
    assert await store.count() == 3 and await store.get("t1", "c") is not None


async def test_a_malformed_turn_changes_nothing(open_store: OpenStore, clock: Clock) -> None:
    store = await open_store()
    await _commit(store, clock, "t", "s", "kept")
    before = await store.get("t", "s")
    clock.now += 5
    bad = [*_tool_steps("c1"), {"role": "tool", "content": "no call id"}]
    with pytest.raises(KeyError):
        await _commit(store, clock, "t", "s", "lost", bad)
    with pytest.raises(KeyError):
        await _commit(store, clock, "t", "new", "lost", bad)
    after = await store.get("t", "s")
    assert before is not None and after is not None
    assert after.messages == before.messages and after.visible_count == 2
    assert after.last_activity == before.last_activity
    assert await store.get("t", "new") is None and await store.count() == 1


async def test_a_cancelled_commit_is_all_or_nothing(open_store: OpenStore, clock: Clock) -> None:
    """Cancel commits at every point they can be cancelled: each is whole or absent, and the store
    keeps working (no transaction left open)."""
    store = await open_store()
    await _commit(store, clock, "t", "s", "first")
    committed = ["first"]
    for ticks in range(40):
        clock.now += 1
        text = f"cancelled after {ticks} ticks"
        task = asyncio.ensure_future(_commit(store, clock, "t", "s", text, _tool_steps(f"c{ticks}")))
        for _ in range(ticks):
            await asyncio.sleep(0)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        users = [c for r, c in await _visible(store, "t", "s") if r == "user"]
        if users[-1] == text:
            committed.append(text)
        assert users == committed
        clock.now += 1
        await _commit(store, clock, "t", "s", f"after {ticks}")
        committed.append(f"after {ticks}")
    session = await store.get("t", "s")
    assert session is not None and session.visible_count == 2 * len(committed)
    assert await store.status() == "healthy"


async def test_status_is_healthy_and_kind_is_named(open_store: OpenStore, clock: Clock) -> None:
    store = await open_store()
    assert store.kind in KINDS
    assert await store.status() == "healthy"
    await _commit(store, clock, "t", "s")
    assert await store.status() == "healthy"


# --- sqlite only: the file, durability across reopen, failures ------------------------------------


async def _sqlite(tmp_path: Path, clock: Clock, name: str = "s.db", **limits: Any) -> SqliteSessions:
    return await SqliteSessions.open(tmp_path / name, ttl_seconds=limits.pop("ttl", 0), clock=clock, **limits)


def _set_page_limit(store: SqliteSessions, pages: int | None) -> Awaitable[Any]:
    """A full disk, for real: SQLite refuses to grow the file beyond ``pages`` (None: no limit).
    The pragma belongs to the connection, so it is set on the store's own."""
    return store._sqlite.connection().execute_fetchall(f"PRAGMA max_page_count = {pages or 4294967294:d}")


async def test_sqlite_history_survives_reopening(tmp_path: Path, clock: Clock) -> None:
    store = await _sqlite(tmp_path, clock)
    await _commit(store, clock, "t", "s", "one", _tool_steps("c1"))
    clock.now += 1
    await _commit(store, clock, "t", "other")
    before = await store.get("t", "s")
    await store.close()
    reopened = await _sqlite(tmp_path, clock)
    try:
        after = await reopened.get("t", "s")
        assert before is not None and after is not None
        assert (after.messages, after.visible_count, after.created_at, after.last_activity) == (
            before.messages, before.visible_count, before.created_at, before.last_activity)
        assert [s.session_id for s in (await reopened.page("t", 5, 0)).sessions] == ["other", "s"]
        assert await reopened.count() == 2
    finally:
        await reopened.close()
    with sqlite3.connect(tmp_path / "s.db") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


async def test_sqlite_refuses_a_database_from_a_newer_release(tmp_path: Path, clock: Clock) -> None:
    with sqlite3.connect(tmp_path / "s.db") as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(SessionDatabaseError, match=r"newer than this program supports .*SESSION_DB_PATH"):
        await _sqlite(tmp_path, clock)


async def test_sqlite_refuses_a_file_that_is_not_a_database(tmp_path: Path, clock: Clock) -> None:
    (tmp_path / "s.db").write_bytes(b"this is not sqlite " * 100)
    with pytest.raises(SessionDatabaseError, match=r"cannot use .* as the session database"):
        await _sqlite(tmp_path, clock)


async def test_sqlite_full_disk_fails_the_commit_whole_then_recovers(tmp_path: Path, clock: Clock) -> None:
    store = await _sqlite(tmp_path, clock)
    try:
        await _commit(store, clock, "t", "s", "kept")
        before = await store.get("t", "s")
        await _set_page_limit(store, 1)  # the current size
        clock.now += 5
        # The session row fits in its page; the large message needs new pages: it fails half-way.
        with pytest.raises(StoreUnavailable, match="full"):
            await _commit(store, clock, "t", "s", "x" * 20_000, _tool_steps("c1"))
        assert await store.status() == "unavailable"
        after = await store.get("t", "s")
        assert before is not None and after is not None
        assert (after.messages, after.visible_count, after.last_activity) == (
            before.messages, before.visible_count, before.last_activity)
        assert await store.count() == 1 and (await store.page("t", 5, 0)).total == 1
        await _set_page_limit(store, None)
        assert await _commit(store, clock, "t", "s", "x" * 20_000) == 4
        assert await store.status() == "healthy"
    finally:
        await store.close()


async def test_sqlite_a_commit_failing_after_its_first_writes_leaves_nothing(tmp_path: Path, clock: Clock) -> None:
    """A failure SQLite does not roll back by itself (a constraint, here from a row another writer
    put where the turn's messages go): the session row was already updated when the insert fails."""
    store = await _sqlite(tmp_path, clock)
    try:
        await _commit(store, clock, "t", "s", "kept")
        before = await store.get("t", "s")
        with sqlite3.connect(tmp_path / "s.db") as other:
            other.execute("INSERT INTO messages (tenant, session_id, seq, role, content, ts) "
                          "VALUES ('t', 's', 3, 'user', 'squatter', 0)")
        clock.now += 5
        with pytest.raises(sqlite3.IntegrityError):
            await _commit(store, clock, "t", "s", "lost", _tool_steps("c1"))
        with sqlite3.connect(tmp_path / "s.db") as other:
            other.execute("DELETE FROM messages WHERE content = 'squatter'")
        after = await store.get("t", "s")
        assert before is not None and after is not None
        assert (after.messages, after.visible_count, after.last_activity) == (
            before.messages, before.visible_count, before.last_activity)
        assert await _commit(store, clock, "t", "s", "next") == 4
        assert await store.status() == "healthy"  # a constraint is a bug, not an unavailable store
    finally:
        await store.close()


async def test_sqlite_status_recovers_by_itself_when_idle(tmp_path: Path, clock: Clock,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    store = await _sqlite(tmp_path, clock)
    try:
        await _set_page_limit(store, 1)
        with pytest.raises(StoreUnavailable):
            await _commit(store, clock, "t", "s", "y" * 20_000)
        assert await store.status() == "unavailable"  # held for PROBE_SECONDS after a failure
        await _set_page_limit(store, None)
        monkeypatch.setattr(sqlite_sessions, "PROBE_SECONDS", 0.0)  # no waiting out the hold-down
        assert await store.status() == "healthy"  # its own small write succeeded
    finally:
        await store.close()


async def test_sqlite_closed_store_is_unavailable(tmp_path: Path, clock: Clock) -> None:
    store = await _sqlite(tmp_path, clock)
    await _commit(store, clock, "t", "s")
    await store.close()
    await store.close()
    assert await store.status() == "unavailable"
    calls: list[Callable[[], Awaitable[Any]]] = [
        lambda: store.get("t", "s"), lambda: store.page("t", 1, 0), lambda: store.delete("t", "s"),
        store.count, lambda: store.context("t", "s", 5), lambda: _commit(store, clock, "t", "s")]
    for call in calls:
        with pytest.raises(StoreUnavailable):
            await call()


async def test_sqlite_counts_stay_in_step_with_the_tables(tmp_path: Path, clock: Clock) -> None:
    store = await _sqlite(tmp_path, clock, ttl=100, max_sessions=5, max_messages=10)
    try:
        for i in range(12):
            clock.now += 10
            await _commit(store, clock, f"t{i % 3}", f"s{i % 7}", steps=_tool_steps("c") if i % 2 else None)
        await store.delete("t0", "s0")
        clock.now += 45
        await store.expire()
        counted = await store.count()
    finally:
        await store.close()
    with sqlite3.connect(tmp_path / "s.db") as db:
        assert db.execute("SELECT COUNT(*) FROM sessions").fetchone()[0] == counted
        orphans = db.execute("SELECT COUNT(*) FROM messages m WHERE NOT EXISTS (SELECT 1 FROM sessions s "
                             "WHERE s.tenant = m.tenant AND s.session_id = m.session_id)").fetchone()[0]
        assert orphans == 0
        for tenant, sid, first, nxt, visible in db.execute(
                "SELECT tenant, session_id, first_seq, next_seq, visible_count FROM sessions"):
            seqs = [r[0] for r in db.execute("SELECT seq FROM messages WHERE tenant = ? AND session_id = ? "
                                             "ORDER BY seq", (tenant, sid))]
            assert seqs == list(range(first, nxt))
            assert visible == db.execute(
                "SELECT COUNT(*) FROM messages WHERE tenant = ? AND session_id = ? AND (role = 'user' OR "
                "(role = 'assistant' AND extra IS NULL))", (tenant, sid)).fetchone()[0]


async def test_sqlite_paging_uses_the_index(tmp_path: Path, clock: Clock) -> None:
    store = await _sqlite(tmp_path, clock)
    await _commit(store, clock, "t", "s")
    await store.close()
    with sqlite3.connect(tmp_path / "s.db") as db:
        for order in ("DESC", "ASC"):
            plan = " ".join(str(r[-1]) for r in db.execute(
                "EXPLAIN QUERY PLAN SELECT session_id FROM sessions WHERE tenant = ? "
                f"ORDER BY last_activity {order}, touched {order} LIMIT 5 OFFSET 10", ("t",)))
            assert "USING INDEX sessions_by_tenant_activity" in plan and "TEMP B-TREE" not in plan, plan
        plan = " ".join(str(r[-1]) for r in db.execute(
            "EXPLAIN QUERY PLAN SELECT tenant, session_id FROM sessions ORDER BY last_activity, touched LIMIT 1"))
        assert "USING INDEX sessions_by_activity" in plan or "USING COVERING INDEX sessions_by_activity" in plan, plan


async def test_the_redis_url_fixture_serves_a_real_redis(redis_url: str) -> None:
    """The fixture the redis store's tests use: a real server, so they never skip silently."""
    reader, writer = await asyncio.open_connection(*redis_url.removeprefix("redis://").split("/")[0].split(":"))
    writer.write(b"PING\r\n")
    assert await reader.readline() == b"+PONG\r\n"
    writer.close()
    await writer.wait_closed()


# --- who answers: the session's mode, and messages written outside a turn (human handoff) -------


def _person(text: str, clock: Clock, name: str = "Alice") -> Message:
    return Message("assistant", text, clock.now, {"author": {"type": "human", "id": "k1", "name": name}})


async def test_a_session_has_a_mode(open_store: OpenStore, clock: Clock) -> None:
    store = await open_store()
    assert not await store.set_mode("t", "s", "human")  # no session yet
    assert await store.mode("t", "s") is None
    await _commit(store, clock, "t", "s", "one")
    await _commit(store, clock, "t", "other", "two")
    got = await store.get("t", "s")
    assert got is not None and got.mode == "agent" and await store.mode("t", "s") == "agent"
    assert await store.set_mode("t", "s", "waiting_for_human", expect="agent")
    assert await store.mode("t", "s") == "waiting_for_human"
    assert await store.mode("u", "s") is None
    assert not await store.set_mode("t", "s", "human", expect="agent")  # it is not "agent" any more
    got = await store.get("t", "s")
    assert got is not None and got.mode == "waiting_for_human"
    assert {s.session_id: s.mode for s in (await store.page("t", 10, 0)).sessions} == {
        "s": "waiting_for_human", "other": "agent"}
    assert not await store.set_mode("u", "s", "human")  # another tenant's session of that id: none
    assert await store.set_mode("t", "s", "agent")
    got = await store.get("t", "s")
    assert got is not None and got.mode == "agent"


async def test_a_bad_mode_is_refused(open_store: OpenStore, clock: Clock) -> None:
    store = await open_store()
    await _commit(store, clock, "t", "s")
    with pytest.raises(ValueError, match="mode must be one of agent, waiting_for_human, human"):
        await store.set_mode("t", "s", "robot")
    got = await store.get("t", "s")
    assert got is not None and got.mode == "agent"


async def test_messages_written_while_a_person_holds_the_session(open_store: OpenStore, clock: Clock) -> None:
    store = await open_store()
    await _commit(store, clock, "t", "s", "one", _tool_steps("c1"))
    clock.now += 1
    count = await store.commit_messages("t", "s", [Message("user", "anyone there?", clock.now)], clock.now)
    assert count == 3
    count = await store.commit_messages("t", "s", [_person("Hi, Alice here.", clock)], clock.now)
    assert count == 4
    got = await store.get("t", "s")
    assert got is not None and got.visible_count == 4
    visible = [m for m in got.messages if m.visible]
    assert [(m.role, m.content, m.author) for m in visible[2:]] == [
        ("user", "anyone there?", None),
        ("assistant", "Hi, Alice here.", {"type": "human", "id": "k1", "name": "Alice"})]
    # The model reads the person's message as a plain assistant message (both model APIs accept it).
    context = await store.context("t", "s", 50)
    assert context[-2:] == [{"role": "user", "content": "anyone there?"},
                            {"role": "assistant", "content": "Hi, Alice here."}]


async def test_messages_of_a_person_count_against_the_caps(open_store: OpenStore, clock: Clock) -> None:
    store = await open_store(max_messages=10)
    await _commit(store, clock, "t", "s", "turn 0")
    for i in range(4):  # a person's replies, then turns that push them out of the session
        await store.commit_messages("t", "s", [_person(f"reply {i}", clock)], clock.now)
    for i in range(1, 5):
        await _commit(store, clock, "t", "s", f"turn {i}")
    got = await store.get("t", "s")
    assert got is not None and len(got.messages) == 8
    assert got.messages[0].content == "turn 1"
    assert got.visible_count == sum(1 for m in got.messages if m.visible) == 8


async def test_sqlite_sessions_made_before_modes_are_with_the_agent(tmp_path: Path, clock: Clock) -> None:
    store = await _sqlite(tmp_path, clock)
    await _commit(store, clock, "t", "s", "one")
    await store.close()
    with sqlite3.connect(tmp_path / "s.db") as db:  # back to schema 2: no mode column
        db.execute("ALTER TABLE sessions DROP COLUMN mode")
        db.execute("PRAGMA user_version = 2")
    reopened = await _sqlite(tmp_path, clock)
    try:
        got = await reopened.get("t", "s")
        assert got is not None and got.mode == "agent" and got.visible_count == 2
        assert await reopened.set_mode("t", "s", "human")
    finally:
        await reopened.close()


def test_redis_keeps_decoded_messages_within_its_bound() -> None:
    from msev15.store.redis_sessions import _Decoded

    decoded = _Decoded(max_chars=400)
    raws = [json.dumps(["user", f"message {n} " + "x" * 50, float(n), None, 60]) for n in range(20)]
    first = [decoded(raw) for raw in raws]
    assert first == [Message("user", f"message {n} " + "x" * 50, float(n), None) for n in range(20)]
    assert len(decoded) == 400 // len(raws[0])  # the oldest went first
    assert decoded(raws[-1]) is first[-1]  # held: not decoded again
    assert decoded(raws[0]) == first[0] and decoded(raws[0]) is not first[0]  # dropped, decoded anew


async def test_redis_reads_what_another_instance_committed_after_its_own_reads(redis_url: str) -> None:
    """Each instance keeps its own decodings; a read always follows the stored list."""
    one, two = await RedisSessions.open(redis_url), await RedisSessions.open(redis_url)
    try:
        await one.commit_turn("t", "s", "first", 1.0, [], "answer one")
        assert [m["content"] for m in await two.context("t", "s", 10)] == ["first", "answer one"]
        await two.commit_turn("t", "s", "second", 2.0, [], "answer two")
        assert [m["content"] for m in await one.context("t", "s", 3)] == ["answer one", "second", "answer two"]
    finally:
        await one.close()
        await two.close()


SharedStore = RedisSessions | PostgresSessions


async def _held_tails_match_fresh_reads(store: Callable[[Callable[[], float]], Awaitable[SharedStore]]) -> None:
    """300 pseudo-random steps on two instances' stores; each context read of the first is
    compared with one of a store that holds nothing."""
    import random

    now = [1000.0]

    def clock() -> float:
        return now[0]

    one, two = await store(clock), await store(clock)
    rng = random.Random(27)
    hits = 0
    try:
        for step in range(300):
            now[0] += rng.choice((0.5, 1.0, 1.0, 1.0, 60.0))  # now and then idle past the TTL
            session = rng.choice(("a", "b"))
            writer = one if rng.random() < 0.8 else two
            action = rng.random()
            if action < 0.05:
                await writer.delete("t", session)
            else:
                steps: list[dict[str, Any]] = [] if rng.random() < 0.7 else [
                    {"role": "assistant", "content": None, "tool_calls": [
                        {"id": f"c{step}", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}]},
                    {"role": "tool", "tool_call_id": f"c{step}", "content": "x" * rng.randint(1, 90)}]
                await writer.commit_turn("t", session, f"q{step} " + "y" * rng.randint(0, 80), now[0] - 0.1,
                                         steps, f"a{step} " + "z" * rng.randint(0, 80))
            if rng.random() < 0.4:  # not read after every write: commits build on held tails
                continue
            limit = rng.choice((4, 6, 6, 6))
            held = one.tails.known(("t", session), limit)[0]
            fresh = await store(clock)
            try:
                assert await one.context("t", session, limit) == await fresh.context("t", session, limit), step
            finally:
                await fresh.close()
            hits += bool(held) and one.tails.known(("t", session), limit)[0] == held
        assert hits > 20  # the held tails were used, not just dropped
    finally:
        await one.close()
        await two.close()


async def test_redis_context_from_its_held_tail_matches_a_fresh_read(redis_url: str) -> None:
    """The tail an instance holds between its turns (sent again only when the list changed) is
    what a store that holds nothing reads: through trims by count and by bytes, other instances'
    turns, deletes and idle restarts, in a fixed pseudo-random order."""

    def store(clock: Callable[[], float]) -> Awaitable[RedisSessions]:
        return RedisSessions.open(redis_url, max_messages=9, max_bytes=400, ttl_seconds=50.0, clock=clock)

    await _held_tails_match_fresh_reads(store)


async def test_postgres_context_from_its_held_tail_matches_a_fresh_read(pg_cluster: PgCluster) -> None:
    """The same for PostgreSQL: each store on a pool of its own (an instance), one database."""
    url = pg_cluster.create_database("tails")
    databases: list[Database] = []

    async def store(clock: Callable[[], float]) -> PostgresSessions:
        databases.append(await open_database(url, max_size=2))
        return await PostgresSessions.open(databases[-1], max_messages=9, max_bytes=400, ttl_seconds=50.0,
                                           clock=clock)

    try:
        await _held_tails_match_fresh_reads(store)
    finally:
        for database in databases:
            await database.close()


async def test_redis_a_held_tail_pushed_out_while_its_read_is_in_flight_is_still_answered(redis_url: str) -> None:
    """Reads run side by side: tails another read fetches may push out the one a read in flight
    holds (the bound), and that read still answers from the copy it took when it asked."""
    one, two = await RedisSessions.open(redis_url), await RedisSessions.open(redis_url)
    try:
        held, changed = ["h1", "h2", "h3"], ["m1", "m2", "m3"]
        for session in held + changed:
            await one.commit_turn("t", session, f"q {session} " + "x" * 200, 1.0, [], f"a {session} " + "y" * 200)
            assert len(await one.context("t", session, 10)) == 2
        for session in changed:  # another instance's turn: one's copies of these are stale
            await two.commit_turn("t", session, f"again {session}", 2.0, [], f"then {session}")
        one.tails.max_chars = 1  # from the next put on, every tail but the newest goes
        reads = await asyncio.gather(*(one.context("t", s, 10) for s in changed + held))
        fresh = await RedisSessions.open(redis_url)
        try:
            assert reads == [await fresh.context("t", s, 10) for s in changed + held]
        finally:
            await fresh.close()
    finally:
        await one.close()
        await two.close()
