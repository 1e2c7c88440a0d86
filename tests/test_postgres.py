"""PostgreSQL as the system of record (DATABASE_URL, SESSION_STORE=postgres): the migrations, the
settings, the service on it, and what clients see when PostgreSQL cannot be reached. The store
contracts run over postgres in their own suites (test_session_stores.py, test_pending_stores.py,
test_feedback_stores.py, test_handoff_records.py, security/test_api_keys.py)."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio

from msev15.agent.coordination import LocalCoordination
from msev15.agent.redis_coordination import RedisCoordination
from msev15.app import create_app
from msev15.banner import banner
from msev15.common.env import SettingsError
from msev15.config import Settings
from msev15.events.redis_turnlog import RedisTurnLog
from msev15.store.base import FENCE, SESSIONS, FencedOut
from msev15.store.context import ORDERS
from msev15.store.order_seed import DEMO_ORDERS, DEMO_TENANT
from msev15.store.order_values import OrderNotFound
from msev15.store.pg_kit import DatabaseError, connect_database, masked, open_database
from msev15.store.pg_orders import PostgresOrders
from msev15.store.pg_schema import MIGRATIONS, SCHEMA_VERSION
from msev15.store.pg_sessions import PostgresSessions
from msev15.store.redis_fence import RedisFence
from msev15.store.redis_kit import tenant_key
from msev15.topology import TOPOLOGY
from tests import pg_server
from tests.conftest import assert_envelope, make_settings
from tests.pg_server import PgCluster, free_port

# --- migrations ----------------------------------------------------------------------------------


async def test_concurrent_migrators_apply_the_schema_once(pg_cluster: PgCluster) -> None:
    """Eight instances start at once on one fresh database: all succeed, each version is applied once."""
    url = pg_cluster.create_database("migrate", empty=True)
    databases = await asyncio.gather(*(open_database(url, max_size=1) for _ in range(8)))
    try:
        async with databases[0].connection() as conn:
            rows = await conn.fetch("SELECT version, name FROM msev15_migrations ORDER BY version")
            tables = {r[0] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        assert [(r[0], r[1]) for r in rows] == [(v, name) for v, name, _ in MIGRATIONS]
        assert {"sessions", "messages", "pending_turns", "feedback", "handoffs", "api_keys"} <= tables
    finally:
        for database in databases:
            await database.close()


async def test_a_database_of_a_newer_release_is_refused(pg_cluster: PgCluster) -> None:
    url = pg_cluster.create_database("newer", empty=True)
    (await open_database(url)).pool.terminate()
    conn = await asyncpg.connect(url)
    await conn.execute("INSERT INTO msev15_migrations (version, name) VALUES ($1, 'from the future')",
                       SCHEMA_VERSION + 1)
    await conn.close()
    with pytest.raises(DatabaseError, match="newer than this program supports"):
        await open_database(url)
    with pytest.raises(DatabaseError, match="newer than this program supports"):  # the service's start-up too
        await connect_database(url)


# --- settings --------------------------------------------------------------------------------------


def test_session_store_postgres_needs_database_url() -> None:
    with pytest.raises(SettingsError, match="DATABASE_URL is required when SESSION_STORE=postgres"):
        Settings.from_env({"SESSION_STORE": "postgres"})


@pytest.mark.parametrize("bad", ["mysql://u@h/db", "postgresql://", "postgresql://h:notaport/db", "just text"])
def test_a_bad_database_url_is_refused(bad: str) -> None:
    with pytest.raises(SettingsError, match="DATABASE_URL"):
        Settings.from_env({"DATABASE_URL": bad})


def test_the_password_is_never_shown(tmp_path: Path) -> None:
    url = "postgresql://msev15:s3cr3t-pw@db.internal:5432/msev15"
    settings = make_settings(tmp_path, session_store="postgres", database_url=url)
    assert masked(url) == "postgresql://msev15:***@db.internal:5432/msev15"
    assert "s3cr3t-pw" not in str(settings.masked())
    shown = banner(settings, local_tools=0, mcp_tools=0, mcp_status={}, warnings=[])
    assert "postgres (db.internal:5432/msev15" in shown and "s3cr3t-pw" not in shown
    assert url in settings.secrets()  # so the log scrubber removes it from any line


# --- the service on PostgreSQL -------------------------------------------------------------------


async def test_chat_history_and_readiness_on_postgres(pg_cluster: PgCluster, service: Any) -> None:
    url = pg_cluster.create_database("service")
    client = await service(session_store="postgres", database_url=url)
    assert isinstance(client.app[SESSIONS], PostgresSessions)
    for text in ("hello", "where is my order ORD-12345678?"):
        resp = await client.post("/api/v1/chat", json={"session_id": "pg-1", "message": text})
        assert resp.status == 200, await resp.text()
    history = await (await client.get("/api/v1/sessions/pg-1/history")).json()
    assert history["message_count"] == 4
    ready = await client.get("/health/readiness")
    body = await ready.json()
    assert ready.status == 200 and body["checks"]["session_store"] == "healthy"
    assert body["checks"]["database"] == "healthy"
    conn = await asyncpg.connect(url)  # in the database, not only in the service
    try:
        assert await conn.fetchval("SELECT visible_count FROM sessions WHERE session_id = 'pg-1'") == 4
    finally:
        await conn.close()


async def test_an_unreachable_database_starts_not_ready_and_says_why(tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    """As with Redis down: the topology opens, the database is unavailable, the log says which
    (without the password). The recovery is tests/test_postgres_restart.py's, with a real server."""
    url = f"postgresql://msev15:hunter2-pw@127.0.0.1:{free_port()}/msev15"
    app = await create_app(make_settings(tmp_path, session_store="postgres", database_url=url))
    topology = app[TOPOLOGY]
    await topology.open()
    try:
        assert topology.database is not None and not topology.database.migrated
        assert await topology.database.status() == "unavailable"
        assert await topology.sessions.status() == "unavailable"
    finally:
        await topology.close()
    said = [r.getMessage() for r in caplog.records if "starting not ready" in r.getMessage()]
    assert said and "msev15:***@127.0.0.1" in said[0] and "hunter2-pw" not in caplog.text


async def test_postgres_down_answers_503_store_unavailable_and_readiness_recovers(pg_cluster: PgCluster,
                                                                                   service: Any) -> None:
    """The session database goes away under a running service (its connections are terminated and
    new ones refused): chat answers 503 store_unavailable with Retry-After, readiness says so, and
    both recover by themselves once connections are allowed again."""
    url = pg_cluster.create_database("outage")
    name = url.rsplit("/", 1)[1]
    client = await service(session_store="postgres", database_url=url)
    assert (await client.post("/api/v1/chat", json={"session_id": "s", "message": "hello"})).status == 200
    pg_cluster.psql(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
    pg_cluster.psql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
    try:
        resp = await client.post("/api/v1/chat", json={"session_id": "s", "message": "again"})
        assert resp.status == 503 and resp.headers.get("Retry-After")
        assert_envelope(await resp.json(), "store_unavailable")
        ready = await client.get("/health/readiness")
        body = await ready.json()
        assert ready.status == 503 and body["checks"]["database"] == "unavailable"
        assert body["checks"]["session_store"] == "unavailable"
    finally:
        pg_cluster.psql(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
    assert (await client.get("/health/readiness")).status == 200
    resp = await client.post("/api/v1/chat", json={"session_id": "s", "message": "back"})
    assert resp.status == 200 and (await resp.json())["message_count"] == 4


async def test_the_keys_command_opens_the_services_store(pg_cluster: PgCluster, service: Any, tmp_path: Path) -> None:
    """``msev15 keys`` with DATABASE_URL writes where the service reads: a key it creates opens the API."""
    url = pg_cluster.create_database("keys")
    env = {**os.environ, "DATABASE_URL": url, "API_KEYS_DB_PATH": str(tmp_path / "unused.db")}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "msev15", "keys", "create", "--tenant", "acme",
                                                cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    key = out.decode().strip()
    assert not (tmp_path / "unused.db").exists()
    client = await service(auth_mode="api_key", database_url=url)
    ok = await client.get("/api/v1/sessions", headers={"Authorization": f"Bearer {key}"})
    assert ok.status == 200, await ok.text()
    refused = await client.get("/api/v1/sessions", headers={"Authorization": f"Bearer {key[:-1]}x"})
    assert refused.status == 401


async def test_replicas_on_one_database_share_orders(pg_cluster: PgCluster, service: Any) -> None:
    """Two instances on one DATABASE_URL: an order made through one is seen (and changed) through the other."""
    url = pg_cluster.create_database("replicas")
    one, two = await service(database_url=url), await service(database_url=url)
    made = await one.app[ORDERS].create("acme", "CUST-1", "SKU-1", 1, "9.99", "1 Main Street")
    seen = await two.app[ORDERS].get("acme", made["order_id"])
    assert seen == made
    await two.app[ORDERS].update_status("acme", made["order_id"], "confirmed")
    assert (await one.app[ORDERS].get("acme", made["order_id"]))["status"] == "confirmed"
    with pytest.raises(OrderNotFound):
        await two.app[ORDERS].get("other-tenant", made["order_id"])


async def test_instances_seeding_at_once_seed_once(pg_cluster: PgCluster) -> None:
    """ORDER_DB_SEED on every replica: while one instance is seeding (its transaction open, its
    rows not yet visible), the others wait for it and then add nothing."""
    url = pg_cluster.create_database("seed")
    database = await open_database(url)
    other = await asyncpg.connect(url)
    try:
        async with other.transaction():  # another instance, mid-seed
            await other.execute("SELECT pg_advisory_xact_lock(hashtext('orders-seed'), hashtext($1))", DEMO_TENANT)
            await other.execute("INSERT INTO orders (order_id, tenant_id, customer_id, product_sku, quantity, "
                                "price_cents, shipping_address, status, created_at, updated_at) VALUES "
                                "('ORD-AAAAAAAA', $1, 'C', 'S', 1, 100, 'A', 'pending', 'x', 'x')", DEMO_TENANT)
            seeds = asyncio.gather(*(PostgresOrders(database).seed_demo_orders() for _ in range(3)))
            deadline = time.monotonic() + 10
            while await other.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                                       "AND NOT granted") < 3:  # until all three wait for the seeder
                assert not seeds.done(), f"a seed went ahead while another instance was seeding: {seeds.result()}"
                assert time.monotonic() < deadline, "the seeds neither waited nor finished"
                await asyncio.sleep(0.01)
        assert await seeds == [0, 0, 0]
        assert await PostgresOrders(database).count(DEMO_TENANT) == 1
        assert len(DEMO_ORDERS) > 1
    finally:
        await other.close()
        await database.close()


async def test_postgres_with_redis_shares_the_live_parts(pg_cluster: PgCluster, redis_url: str, service: Any) -> None:
    """SESSION_STORE=postgres with REDIS_URL: conversations in PostgreSQL, the live parts (turn log,
    coordination) on Redis, so two instances serve one session; without REDIS_URL they stay local."""
    url = pg_cluster.create_database("shared")
    one = await service(session_store="postgres", database_url=url, redis_url=redis_url)
    two = await service(session_store="postgres", database_url=url, redis_url=redis_url)
    topology = one.app[TOPOLOGY]
    assert topology.shared and isinstance(topology.turns, RedisTurnLog)
    assert isinstance(topology.coordination, RedisCoordination)
    assert (await one.post("/api/v1/chat", json={"session_id": "both", "message": "hello"})).status == 200
    resp = await two.post("/api/v1/chat", json={"session_id": "both", "message": "again"})
    assert resp.status == 200 and (await resp.json())["message_count"] == 4
    alone = await service(session_store="postgres", database_url=url)
    assert not alone.app[TOPOLOGY].shared and isinstance(alone.app[TOPOLOGY].coordination, LocalCoordination)


async def test_instances_creating_one_session_at_once_both_commit(pg_cluster: PgCluster) -> None:
    """Commits from two instances (two pools) race to create the same session: every turn is
    kept, the session is counted once (the loser of the insert retries as an append)."""
    url = pg_cluster.create_database("race")
    pools = [await open_database(url), await open_database(url)]
    try:
        stores = [await PostgresSessions.open(pool, ttl_seconds=0) for pool in pools]
        await asyncio.gather(*(stores[i % 2].commit_turn("acme", "same", f"hi {i}", 1.0, [], "hello")
                               for i in range(8)))
        session = await stores[0].get("acme", "same")
        assert session is not None and session.visible_count == 16
        assert sorted(m.content or "" for m in session.messages if m.role == "user") == [f"hi {i}" for i in range(8)]
        assert await stores[1].count() == 1
        page = await stores[1].page("acme", 10, 0)
        assert page.total == 1
    finally:
        for pool in pools:
            await pool.close()


async def test_with_redis_a_turn_that_lost_its_session_cannot_commit(pg_cluster: PgCluster, redis_url: str) -> None:
    """FENCE (set by the runner to the turn's queue entry): a commit goes through only while that
    entry heads the session's queue in Redis; a turn another instance took over writes nothing."""
    database = await open_database(pg_cluster.create_database("fence"))
    store = await PostgresSessions.open(database, ttl_seconds=0, fence=RedisFence(redis_url))
    client = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
    queue = tenant_key("acme", "queue", "s")
    try:
        await client.rpush(queue, "turn-2|instance-b")  # another instance's turn heads the queue
        token = FENCE.set("turn-1|instance-a")
        try:
            with pytest.raises(FencedOut):
                await store.commit_turn("acme", "s", "late", 1.0, [], "answer")
            assert await store.get("acme", "s") is None
            await client.lpop(queue)
            await client.rpush(queue, "turn-1|instance-a")  # it heads the queue again
            assert await store.commit_turn("acme", "s", "on time", 1.0, [], "answer") == 2
        finally:
            FENCE.reset(token)
        assert await store.commit_turn("acme", "s", "no fence", 2.0, [], "answer") == 4  # not coordinated
    finally:
        await client.aclose()
        await store.close()
        await database.close()


def test_missing_binaries_skip_except_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without initdb/pg_ctl the PostgreSQL tests skip with the reason; under CI=true they fail."""
    monkeypatch.setattr(pg_server, "bindir", lambda: None)
    reasons: list[str] = []
    monkeypatch.delenv("CI", raising=False)
    assert pg_server.start_cluster(reasons.append) is None
    assert reasons and "postgresql package" in reasons[0]
    monkeypatch.setenv("CI", "true")
    with pytest.raises(RuntimeError, match="initdb"):
        pg_server.start_cluster(reasons.append)


async def test_callers_waiting_on_a_failed_start_up_migration_fail_with_it() -> None:
    """PostgreSQL down at start-up, behind an address that accepts and never answers: requests that
    queue behind one migration attempt fail with it, instead of each waiting out its own connect
    timeout in turn. Counted by the connections the silent server sees, not by time."""
    accepted = 0
    held: list[asyncio.StreamWriter] = []

    async def silent(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        held.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        database = await connect_database(f"postgresql://msev15:pw@127.0.0.1:{port}/msev15")
        try:
            assert not database.migrated and accepted == 1
            statuses = await asyncio.gather(*(database.status() for _ in range(4)))
            assert statuses == ["unavailable"] * 4
            assert accepted == 2  # one attempt for the four callers
        finally:
            database.pool.terminate()
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_look_ups_by_key_use_the_key_in_every_cached_plan(pg_cluster: PgCluster) -> None:
    """asyncpg prepares every statement; after a few runs PostgreSQL may cache a generic plan,
    made without the parameters' values. Planned while ``sessions`` is empty (a new database),
    a look-up written ``last_activity > cutoff`` took sessions_by_tenant_activity, so every turn
    walked all of its tenant's sessions until an ANALYZE replaced the plan; an order by its id
    took an index on (tenant_id, ...) the same way. Each statement that finds a session or an
    order by its key must plan to that key with no parameter known."""
    from msev15.store.pg_admission import PostgresAdmissionLook
    from msev15.store.pg_orders import _GET, _SET_STATUS
    from msev15.store.pg_session_sql import APPEND, APPEND_WITHIN, CONTEXT, SET_MODE

    database = await open_database(pg_cluster.create_database("plans"))
    try:
        sessions = await PostgresSessions.open(database, ttl_seconds=3600)
        look = PostgresAdmissionLook(database, sessions=sessions, pending=True, profiles=True, context_limit=20)
        statements = {"context": CONTEXT, "append": APPEND, "append_within": APPEND_WITHIN,
                      "look": look._statement(True, True, False),
                      "look_with_context": look._statement(True, True, True),
                      "set_mode": SET_MODE.format(guard=""), "set_mode_if": SET_MODE.format(guard=" AND mode = $5")}
        async with database.connection() as conn:
            await conn.execute("SET plan_cache_mode = force_generic_plan")
            for name, sql in statements.items():
                plan = await _generic_plan(conn, sql)
                assert "sessions_pkey" in plan and "sessions_by_tenant_activity" not in plan, (name, plan)
            for name, sql in {"order": _GET, "order_status": _SET_STATUS}.items():  # an order by its id, likewise
                plan = await _generic_plan(conn, sql)
                assert "orders_order_id_key" in plan, (name, plan)
            await conn.execute("RESET plan_cache_mode")
    finally:
        await database.close()


async def _generic_plan(conn: Any, sql: str) -> str:
    """EXPLAIN of ``sql`` prepared with the session's plan_cache_mode, no parameter known."""
    types = [t.name for t in (await conn.prepare(sql)).get_parameters()]
    await conn.execute(f"PREPARE probe ({', '.join(types)}) AS {sql}")
    try:
        args = ", ".join("NULL" for _ in types)
        return "\n".join(r[0] for r in await conn.fetch(f"EXPLAIN EXECUTE probe ({args})"))
    finally:
        await conn.execute("DEALLOCATE probe")
