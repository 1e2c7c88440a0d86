"""The session caps and the byte budget, run against every store (memory, sqlite, redis).

SESSION_MAX_SESSIONS_PER_TENANT: a tenant past its own cap loses its own least recently active
sessions. SESSION_MAX_SESSIONS: the tenant holding the most loses its least recently active, so
one tenant's flood never costs another tenant a session. SESSION_MAX_BYTES: a session keeps its
newest whole turns within the budget (UTF-8 text and tool-call arguments); the newest turn always
stays. The memory store is the reference; every store must give the same result.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from msev15.store.base import Sessions
from msev15.store.redis_sessions import RedisSessions
from msev15.store.session_schema import MIGRATIONS, SCHEMA_VERSION
from msev15.store.sessions import SessionStore, message_bytes
from msev15.store.sqlite_sessions import SqliteSessions
from tests import test_session_stores as contract
from tests.test_session_stores import Clock, OpenStore, _commit, _tool_steps, _visible

# The contract suite's fixtures: a fresh store of each kind, on the test's clock.
clock = contract.clock
open_store = contract.open_store


async def _ids(store: Sessions, tenant: str) -> list[str]:
    return [s.session_id for s in (await store.page(tenant, 100, 0)).sessions]


# --- SESSION_MAX_SESSIONS_PER_TENANT ------------------------------------------------------------

async def test_a_tenant_past_its_own_cap_loses_only_its_own_least_recently_active(open_store: OpenStore,
                                                                                  clock: Clock) -> None:
    store = await open_store(max_sessions_per_tenant=3)
    for name in ("q0", "q1"):
        clock.now += 1
        await _commit(store, clock, "quiet", name)
    for i in range(3):
        clock.now += 1
        await _commit(store, clock, "loud", f"l{i}")
    clock.now += 1
    await _commit(store, clock, "loud", "l0")  # l0 active again: l1 is now loud's least recently active
    for i in range(3, 10):
        clock.now += 1
        await _commit(store, clock, "loud", f"l{i}")
    assert await _ids(store, "loud") == ["l9", "l8", "l7"]
    assert await _ids(store, "quiet") == ["q1", "q0"]
    assert await store.get("loud", "l0") is None and await store.get("loud", "l1") is None
    assert await store.count() == 5 and store.held() == 5 and store.evicted == 7


async def test_a_per_tenant_cap_of_one_keeps_the_newest_session(open_store: OpenStore, clock: Clock) -> None:
    store = await open_store(max_sessions_per_tenant=1)
    await _commit(store, clock, "t", "a")
    clock.now += 1
    await _commit(store, clock, "t", "a", "again")  # an existing session never evicts another, nor itself
    assert await _ids(store, "t") == ["a"] and store.evicted == 0
    clock.now += 1
    await _commit(store, clock, "t", "b")
    assert await _ids(store, "t") == ["b"] and await store.get("t", "a") is None
    await _commit(store, clock, "other", "o")
    assert await store.count() == 2 and store.evicted == 1


# --- SESSION_MAX_SESSIONS -----------------------------------------------------------------------

async def test_one_tenants_flood_past_the_global_cap_costs_only_that_tenant(open_store: OpenStore,
                                                                           clock: Clock) -> None:
    store = await open_store(max_sessions=6)
    for tenant, name in (("b", "b0"), ("c", "c0"), ("b", "b1")):
        clock.now += 1
        await _commit(store, clock, tenant, name)
    for i in range(20):
        clock.now += 1
        await _commit(store, clock, "a", f"a{i}")
        if i == 10:
            clock.now += 1
            await _commit(store, clock, "a", "a9")  # active again: it outlives a8 and a10
    assert await _ids(store, "b") == ["b1", "b0"] and await _ids(store, "c") == ["c0"]
    assert await _ids(store, "a") == ["a19", "a18", "a17"]
    assert await store.count() == 6 and store.held() == 6 and store.evicted == 17


async def test_the_least_recently_active_of_the_largest_tenant_goes(open_store: OpenStore, clock: Clock) -> None:
    store = await open_store(max_sessions=6)
    for tenant, name in (("a", "a0"), ("a", "a1"), ("a", "a2"), ("b", "b0"), ("b", "b1"), ("c", "c0")):
        clock.now += 1
        await _commit(store, clock, tenant, name)
    clock.now += 1
    await _commit(store, clock, "a", "a0")  # a1 is now a's least recently active, b0 the oldest of all
    clock.now += 1
    await _commit(store, clock, "c", "c1")  # over the cap: a holds the most
    assert await _ids(store, "a") == ["a0", "a2"]
    assert await _ids(store, "b") == ["b1", "b0"] and await _ids(store, "c") == ["c1", "c0"]
    assert store.evicted == 1


async def test_a_global_cap_of_one_keeps_the_session_just_committed(open_store: OpenStore, clock: Clock) -> None:
    store = await open_store(max_sessions=1)
    await _commit(store, clock, "a", "s")
    clock.now += 1
    await _commit(store, clock, "b", "s")  # a tie (one each): the committed session is never the one to go
    assert await store.get("a", "s") is None and await _ids(store, "b") == ["s"]
    clock.now += 1
    await _commit(store, clock, "b", "s", "again")
    assert await store.count() == 1 and store.evicted == 1


async def test_deleting_and_expiring_keep_the_counts_right(open_store: OpenStore, clock: Clock) -> None:
    store = await open_store(ttl=100, max_sessions=4)
    for i in range(3):
        clock.now += 1
        await _commit(store, clock, "a", f"a{i}")
    assert await store.delete("a", "a0") == 2
    clock.now += 150
    await store.expire()
    assert await store.count() == 0 and store.held() == 0
    for i in range(4):
        clock.now += 1
        await _commit(store, clock, "b", f"b{i}")
    clock.now += 1
    await _commit(store, clock, "a", "fresh")  # b holds the most (4 of 5): b0 goes, not the newcomer
    assert await store.get("a", "fresh") is not None and await store.get("b", "b0") is None
    assert await store.count() == 4 and store.evicted == 1


# --- SESSION_MAX_BYTES --------------------------------------------------------------------------

async def test_a_session_keeps_its_newest_whole_turns_within_its_byte_budget(open_store: OpenStore,
                                                                             clock: Clock) -> None:
    """Bytes, not characters: each turn is 1,000 + 1,000 two-byte characters (4,000 bytes), so a
    10,000-byte budget keeps two turns (a store counting characters would keep five)."""
    store = await open_store(max_bytes=10_000)
    for i in range(8):
        clock.now += 1
        await store.commit_turn("t", "s", f"{i}" + "é" * 999, clock.now, [], "ü" * 1_000)
    session = await store.get("t", "s")
    assert session is not None
    assert [(m.content or "")[:1] for m in session.messages if m.role == "user"] == ["6", "7"]
    assert session.visible_count == len(session.messages) == 4
    assert sum(message_bytes(m) for m in session.messages) <= 10_000
    assert (await store.page("t", 1, 0)).sessions[0].visible_count == 4
    assert await store.delete("t", "s") == 4


async def test_tool_call_arguments_count_and_go_with_their_turn(open_store: OpenStore, clock: Clock) -> None:
    store = await open_store(max_bytes=1_024)
    big_call = _tool_steps("c1")
    big_call[0]["tool_calls"][0]["function"]["arguments"] = '{"note": "' + "n" * 1_000 + '"}'
    await _commit(store, clock, "t", "s", "with a tool", big_call)
    clock.now += 1
    await _commit(store, clock, "t", "s", "small")  # ~1 KB of arguments + this: over; the tool turn goes
    assert await _visible(store, "t", "s") == [("user", "small"), ("assistant", "answer to small")]
    assert [m["role"] for m in await store.context("t", "s", 10)] == ["user", "assistant"]


async def test_the_newest_turn_stays_even_when_it_alone_is_over_budget(open_store: OpenStore,
                                                                       clock: Clock) -> None:
    store = await open_store(max_bytes=1_024)
    await store.commit_turn("t", "s", "small", clock.now, [], "small")
    clock.now += 1
    assert await store.commit_turn("t", "s", "x" * 5_000, clock.now, _tool_steps("c1"), "y" * 5_000) == 2
    session = await store.get("t", "s")
    assert session is not None
    assert [(m.role, (m.content or "")[:1]) for m in session.messages] == [
        ("user", "x"), ("assistant", ""), ("tool", "{"), ("assistant", "y")]
    clock.now += 1
    assert await store.commit_turn("t", "s", "next", clock.now, [], "fine") == 2  # the big one goes whole
    assert await _visible(store, "t", "s") == [("user", "next"), ("assistant", "fine")]


async def test_message_and_byte_caps_together(open_store: OpenStore, clock: Clock) -> None:
    store = await open_store(max_messages=10, max_bytes=3_000)
    for i in range(12):
        clock.now += 1
        await _commit(store, clock, "t", "s", f"{i:02d}" + "m" * (98 if i % 3 else 998), _tool_steps(f"c{i}"))
    session = await store.get("t", "s")
    assert session is not None and len(session.messages) <= 10
    assert session.messages[0].role == "user" and session.messages[-1].content == f"answer to 11{'m' * 98}"
    assert sum(message_bytes(m) for m in session.messages) <= 3_000
    assert session.visible_count == sum(m.visible for m in session.messages)


# --- two instances on one database ---------------------------------------------------------------

SHARED = ["sqlite", "redis"]


@pytest.fixture(params=SHARED)
async def open_pair(request: pytest.FixtureRequest, tmp_path: Path,
                    clock: Clock) -> AsyncIterator[Callable[..., Awaitable[tuple[Sessions, Sessions]]]]:
    """Two store objects on one SQLite file or one Redis: two instances of the service."""
    opened: list[Sessions] = []
    redis_url = request.getfixturevalue("redis_url") if request.param == "redis" else ""

    async def open_(**caps: Any) -> tuple[Sessions, Sessions]:
        for _ in range(2):
            store: Sessions
            if request.param == "sqlite":
                store = await SqliteSessions.open(tmp_path / "shared.db", ttl_seconds=3600, clock=clock, **caps)
            else:
                store = await RedisSessions.open(redis_url, ttl_seconds=3600, clock=clock, **caps)
            opened.append(store)
        return opened[-2], opened[-1]

    yield open_
    for store in opened:
        await store.close()


async def test_two_instances_racing_commits_stay_within_the_caps(open_pair: Any, clock: Clock) -> None:
    one, two = await open_pair(max_sessions_per_tenant=5, max_sessions=12)
    tenants = ["a", "b", "c"]

    async def flood(store: Sessions, name: str) -> None:
        for i in range(10):  # bounded: 10 sessions per tenant from each writer
            for tenant in tenants:
                clock.now += 0.001
                await store.commit_turn(tenant, f"{name}-{i}", "hi", clock.now, [], "hello")

    # three writers on each instance, so commits and their settling interleave
    await asyncio.gather(*(flood(store, f"{n}-{w}") for n, store in (("one", one), ("two", two)) for w in range(3)))
    totals = [(await one.page(t, 100, 0)).total for t in tenants]
    assert all(total <= 5 for total in totals), totals
    assert sum(totals) == 12 == await one.count() == await two.count()
    assert one.evicted + two.evicted == 180 - 12  # never more evicted than the caps ask for


# --- the SQLite schema: counters kept in step, and the migration from version 1 ------------------

async def test_sqlite_counters_match_the_tables(tmp_path: Path, clock: Clock) -> None:
    store = await SqliteSessions.open(tmp_path / "s.db", ttl_seconds=100, clock=clock, max_sessions=7,
                                      max_sessions_per_tenant=3, max_bytes=2_000, max_messages=10)
    try:
        for i in range(40):
            clock.now += 3
            await _commit(store, clock, f"t{i % 4}", f"s{i % 9}", "x" * (i * 37 % 700),
                          _tool_steps("c") if i % 2 else None)
        await store.delete("t0", "s0")
        clock.now += 60
        await store.expire()
        held = store.held()
    finally:
        await store.close()
    with sqlite3.connect(tmp_path / "s.db") as db:
        assert db.execute("SELECT COUNT(*) FROM sessions").fetchone()[0] == held
        counted = dict(db.execute("SELECT tenant, COUNT(*) FROM sessions GROUP BY tenant").fetchall())
        assert dict(db.execute("SELECT tenant, sessions FROM tenants").fetchall()) == counted
        assert max(counted.values()) <= 3
        for tenant, sid, size in db.execute("SELECT tenant, session_id, bytes FROM sessions").fetchall():
            rows = db.execute("SELECT bytes FROM messages WHERE tenant = ? AND session_id = ?", (tenant, sid))
            assert size == sum(r[0] for r in rows)


async def test_sqlite_picks_the_largest_tenant_from_an_index(tmp_path: Path, clock: Clock) -> None:
    store = await SqliteSessions.open(tmp_path / "s.db", ttl_seconds=0, clock=clock)
    await store.close()
    with sqlite3.connect(tmp_path / "s.db") as db:
        plan = " ".join(str(r[-1]) for r in db.execute(
            "EXPLAIN QUERY PLAN SELECT tenant FROM tenants ORDER BY sessions DESC, changed LIMIT 1"))
        assert "tenants_by_size" in plan and "TEMP B-TREE" not in plan, plan


def _version_1_database(path: Path) -> None:
    """A database as version 1 wrote it: two tenants, a tool exchange, multi-byte text."""
    with sqlite3.connect(path) as db:
        for statement in dict(MIGRATIONS)[1]:
            db.execute(statement)
        db.execute("PRAGMA user_version = 1")
        call = ('[{"id": "c1", "type": "function", '
                '"function": {"name": "get_order_by_id", "arguments": "{\\"order_id\\": \\"ü\\"}"}}]')
        rows: dict[tuple[str, str], list[tuple[str, str | None, str | None]]] = {
            ("a", "s1"): [("user", "héllo", None), ("assistant", None, call), ("tool", '{"ok": true}', '"c1"'),
                          ("assistant", "done ✓", None)],
            ("a", "s2"): [("user", "hi", None), ("assistant", "hello", None)],
            ("b", "s1"): [("user", "x" * 3_000, None), ("assistant", "y", None)]}
        for touched, ((tenant, sid), messages) in enumerate(rows.items(), start=1):
            visible = sum(1 for role, _, extra in messages if role == "user" or (role == "assistant" and not extra))
            db.execute("INSERT INTO sessions VALUES (?, ?, 1000, ?, ?, ?, 0, ?)",
                       (tenant, sid, 1000 + touched, touched, visible, len(messages)))
            db.executemany("INSERT INTO messages VALUES (?, ?, ?, ?, ?, 1000, ?)",
                           [(tenant, sid, seq, *m) for seq, m in enumerate(messages)])
        db.execute("UPDATE meta SET value = 3 WHERE name = 'sessions'")
        db.execute("UPDATE meta SET value = 3 WHERE name = 'touched'")


async def test_sqlite_migrates_a_version_1_database(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "v1.db"
    _version_1_database(path)
    store = await SqliteSessions.open(path, ttl_seconds=0, clock=clock, max_sessions_per_tenant=2, max_bytes=2_000)
    try:
        before = await store.get("a", "s1")
        assert before is not None and store.held() == 3
        with sqlite3.connect(path) as db:
            assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
            assert {m for (m,) in db.execute("SELECT mode FROM sessions")} == {"agent"}
            assert dict(db.execute("SELECT tenant, sessions FROM tenants").fetchall()) == {"a": 2, "b": 1}
            sizes = dict(((t, s), n) for t, s, n in db.execute("SELECT tenant, session_id, bytes FROM sessions"))
        assert sizes[("a", "s1")] == sum(message_bytes(m) for m in before.messages) == 6 + (18 + 15) + 12 + 8
        assert sizes[("b", "s1")] == 3_001
        clock.now = 2_000.0
        await _commit(store, clock, "a", "s3")  # a's own cap (2): its least recently active, s1, goes
        assert await _ids(store, "a") == ["s3", "s2"]
        await _commit(store, clock, "b", "s1", "more")  # over 2,000 bytes: the migrated 3 KB turn goes
        assert await _visible(store, "b", "s1") == [("user", "more"), ("assistant", "answer to more")]
    finally:
        await store.close()


async def test_every_store_keeps_what_the_memory_store_keeps(open_store: OpenStore, clock: Clock) -> None:
    """A seeded mix of turns (multi-byte text, tool exchanges, sizes around the budgets) through
    the per-tenant cap, SESSION_MAX_MESSAGES and SESSION_MAX_BYTES: each store ends holding the
    same sessions with the same messages as the reference, the memory store."""
    caps = dict(max_messages=12, max_bytes=1_500, max_sessions_per_tenant=3)
    store = await open_store(**caps)
    reference = SessionStore(3600, clock, **caps)
    rng = random.Random(1729)
    for i in range(150):  # bounded
        clock.now += 1
        tenant, session = f"t{rng.randrange(3)}", f"s{rng.randrange(5)}"
        text = f"{i}:" + rng.choice("aé✓") * rng.choice((5, 60, 400, 900))
        steps = _tool_steps(*(f"c{i}-{n}" for n in range(rng.choice((0, 0, 1, 3)))))
        await store.commit_turn(tenant, session, text, clock.now, steps, "ok " + text[:50])
        reference.commit_turn(tenant, session, text, clock.now, steps, "ok " + text[:50])
    for tenant in ("t0", "t1", "t2"):
        assert await _ids(store, tenant) == [s.session_id for s in reference.page(tenant, 100, 0).sessions]
        for sid in await _ids(store, tenant):
            got, want = await store.get(tenant, sid), reference.get(tenant, sid)
            assert got is not None and want is not None
            assert (got.messages, got.visible_count) == (want.messages, want.visible_count), (tenant, sid)
    assert store.evicted == reference.evicted
