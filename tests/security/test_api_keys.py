"""API keys: the SQLite store, ``msev15 keys``, the lookup cache, and revocation reaching every
running instance (two real service subprocesses on one API_KEYS_DB_PATH)."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from msev15.handlers.auth import ApiKeyAuthenticator, Unauthorized
from msev15.store.apikeys import KEY_RE, ApiKeyStore, SqliteApiKeyStore, digest
from msev15.store.pg_apikeys import PostgresApiKeyStore
from msev15.store.redis_apikeys import RedisApiKeyStore
from tests.conftest import matched
from tests.test_serve_process import Service, _start


@pytest.fixture(params=["sqlite", "redis", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ApiKeyStore]:
    """The key store contract, on every store (Redis and PostgreSQL: real servers on loopback)."""
    s: ApiKeyStore
    if request.param == "redis":
        s = RedisApiKeyStore(request.getfixturevalue("redis_url"))
    elif request.param == "postgres":
        s = PostgresApiKeyStore(request.getfixturevalue("pg_cluster").create_database("keys"))
    else:
        s = SqliteApiKeyStore(tmp_path / "keys.db")
    yield s
    await s.close()


async def _everything_stored(store: ApiKeyStore, tmp_path: Path) -> bytes:
    if isinstance(store, RedisApiKeyStore):
        client = store._redis
        parts = []
        async for name in client.scan_iter(match="msev15:apikey*"):
            parts.append(repr(await client.hgetall(name) if await client.type(name) == "hash"
                              else await client.zrange(name, 0, -1)).encode())
        return b"".join(parts)
    if isinstance(store, PostgresApiKeyStore):
        async with (await store._database()).connection() as conn:
            return repr([tuple(r) for r in await conn.fetch("SELECT * FROM api_keys")]).encode()
    return (tmp_path / "keys.db").read_bytes() + b"".join(p.read_bytes() for p in tmp_path.glob("keys.db-*"))


async def test_create_verify_list_revoke(store: ApiKeyStore, tmp_path: Path) -> None:
    record, key = await store.create("acme", "support-app")
    assert KEY_RE.fullmatch(key) and key.startswith("msev15_") and len(key) > 60
    found = await store.verify(key)
    assert found is not None and (found.tenant_id, found.name, found.id) == ("acme", "support-app", record.id)
    [listed] = await store.list()
    assert listed.id == record.id and listed.last_used_at is not None and listed.active
    assert await store.revoke(record.id)
    assert await store.verify(key) is None
    assert not await store.revoke(record.id)  # already revoked
    assert not (await store.list())[0].active


async def test_only_a_digest_is_stored(store: ApiKeyStore, tmp_path: Path) -> None:
    _, key = await store.create("acme")
    secret = matched(KEY_RE, key, full=True)["secret"]
    raw = await _everything_stored(store, tmp_path)
    assert raw and secret.encode() not in raw and key.encode() not in raw


@pytest.mark.parametrize("mutate", [
    lambda k: k[:-1] + ("A" if k[-1] != "A" else "B"),  # right id, wrong secret
    lambda k: k.replace("msev15_", "msev16_"),
    lambda k: k + "x",
    lambda k: "",
    lambda k: "Bearer " + k,
])
async def test_near_misses_are_refused(store: ApiKeyStore, mutate) -> None:
    _, key = await store.create("acme")
    assert await store.verify(mutate(key)) is None


async def test_bad_tenant_is_refused_at_creation(store: ApiKeyStore) -> None:
    with pytest.raises(ValueError, match="tenant_id must be"):
        await store.create("bad tenant")


async def test_the_cache_holds_a_lookup_at_most_its_ttl(store: ApiKeyStore) -> None:
    now = [0.0]
    auth = ApiKeyAuthenticator(store, ttl=2.0, clock=lambda: now[0])
    record, key = await store.create("acme")
    assert (await auth.authenticate(key)).tenant_id == "acme"
    await store.revoke(record.id)
    now[0] = 1.9
    assert (await auth.authenticate(key)).tenant_id == "acme"  # cached
    now[0] = 2.1
    with pytest.raises(Unauthorized):
        await auth.authenticate(key)


# --- msev15 keys -------------------------------------------------------------------------------


async def _keys(tmp_path: Path, *args: str) -> tuple[int, str, str]:
    env = {**os.environ, "API_KEYS_DB_PATH": str(tmp_path / "keys.db")}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "msev15", "keys", *args, cwd=tmp_path, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.subprocess
async def test_the_keys_command(tmp_path: Path) -> None:
    code, out, err = await _keys(tmp_path, "create", "--tenant", "acme", "--name", "helpdesk")
    assert code == 0
    key = out.strip()
    assert KEY_RE.fullmatch(key), out
    key_id = matched(KEY_RE, key, full=True)["id"]
    assert f"Created key {key_id} for tenant acme" in err
    code, out, _ = await _keys(tmp_path, "list")
    assert code == 0
    assert key_id in out and "acme" in out and "helpdesk" in out and "active" in out
    assert matched(KEY_RE, key, full=True)["secret"] not in out  # never the secret
    assert "LAST USED" in out
    code, out, _ = await _keys(tmp_path, "revoke", key_id)
    assert code == 0 and f"Revoked key {key_id}" in out
    code, out, _ = await _keys(tmp_path, "list")
    assert "revoked" in out
    code, _, err = await _keys(tmp_path, "revoke", key_id)
    assert code == 1 and "no active key" in err
    code, _, err = await _keys(tmp_path, "create", "--tenant", "no spaces")
    assert code == 2 and "tenant_id must be" in err


# --- revocation across instances ------------------------------------------------------------------


async def _start_instance(tmp_path: Path, name: str, db: Path) -> Service:
    folder = tmp_path / name
    folder.mkdir()
    return await _start(folder, AUTH_MODE="api_key", API_KEYS_DB_PATH=str(db), API_KEYS_CACHE_SECONDS="5")


@pytest.mark.subprocess
async def test_a_revoked_key_is_refused_by_every_instance_within_5_seconds(tmp_path: Path) -> None:
    db = tmp_path / "keys.db"
    code, out, _ = await _keys(tmp_path, "create", "--tenant", "acme")
    assert code == 0
    key = out.strip()
    instances = [await _start_instance(tmp_path, "a", db), await _start_instance(tmp_path, "b", db)]
    try:
        async with aiohttp.ClientSession() as http:

            async def status(instance: Service) -> int:
                async with http.get(f"{instance.url}/api/v1/sessions", headers={"X-API-Key": key}) as resp:
                    return resp.status

            for instance in instances:
                assert await status(instance) == 200  # both have the key cached now
            code, _, _ = await _keys(tmp_path, "revoke", matched(KEY_RE, key, full=True)["id"])
            assert code == 0
            revoked_at = time.monotonic()
            refused: dict[int, float] = {}
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 8
            while len(refused) < len(instances) and loop.time() < deadline:
                for i, instance in enumerate(instances):
                    if i not in refused and await status(instance) == 401:
                        refused[i] = time.monotonic() - revoked_at
                await asyncio.sleep(0.1)  # polling cadence of this client, not a wait for state
            assert sorted(refused) == [0, 1], f"still accepted after 8 s: {refused}"
            assert max(refused.values()) <= 6.0, refused  # the 5 s cache, plus polling and request slack
    finally:
        for instance in instances:
            instance.proc.terminate()
            await instance.finish()
    rows = sqlite3.connect(db).execute("SELECT revoked_at FROM api_keys").fetchall()
    assert rows[0][0] is not None


# --- roles -----------------------------------------------------------------------------------------


async def test_a_key_carries_its_role(store: ApiKeyStore) -> None:
    _, plain = await store.create("acme")
    record, key = await store.create("acme", "alice", "operator")
    assert record.role == "operator"
    found = await store.verify(key)
    assert found is not None and found.role == "operator"
    found = await store.verify(plain)
    assert found is not None and found.role == "customer"  # the default
    assert {(r.name, r.role) for r in await store.list()} == {("", "customer"), ("alice", "operator")}


async def test_a_bad_role_is_refused_at_creation(store: ApiKeyStore) -> None:
    with pytest.raises(ValueError, match="role must be one of customer, operator, admin"):
        await store.create("acme", "x", "root")
    assert await store.list() == []


async def test_sqlite_keys_made_before_roles_are_customers(tmp_path: Path) -> None:
    db = tmp_path / "keys.db"
    old = sqlite3.connect(db)  # the schema before roles, with a key in it
    old.execute("CREATE TABLE api_keys (id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, name TEXT NOT NULL DEFAULT '', "
                "digest TEXT NOT NULL, created_at REAL NOT NULL, last_used_at REAL, revoked_at REAL)")
    key = "msev15_00000000000000aa_" + "B" * 43
    old.execute("INSERT INTO api_keys (id, tenant_id, name, digest, created_at) VALUES (?, ?, ?, ?, ?)",
                ("00000000000000aa", "acme", "legacy", digest(key), time.time()))
    old.commit()
    old.close()
    store = SqliteApiKeyStore(db)
    try:
        found = await store.verify(key)
        assert found is not None and (found.name, found.role) == ("legacy", "customer")
        _, new = await store.create("acme", "ops", "admin")
        found = await store.verify(new)
        assert found is not None and found.role == "admin"
    finally:
        await store.close()
    again = SqliteApiKeyStore(db)
    try:
        assert [r.role for r in await again.list()] == ["customer", "admin"]  # opened again: no second migration
    finally:
        await again.close()


async def test_redis_keys_made_before_roles_are_customers(redis_url: str) -> None:
    store = RedisApiKeyStore(redis_url)
    try:
        key = "msev15_00000000000000bb_" + "C" * 43
        await store._redis.hset("msev15:apikey:00000000000000bb", mapping={  # as the store wrote it before roles
            "tenant_id": "acme", "name": "legacy", "digest": digest(key), "created_at": repr(time.time())})
        await store._redis.zadd("msev15:apikeys", {"00000000000000bb": time.time()})
        found = await store.verify(key)
        assert found is not None and (found.name, found.role) == ("legacy", "customer")
        assert [r.role for r in await store.list()] == ["customer"]
    finally:
        await store.close()


@pytest.mark.subprocess
async def test_the_keys_command_with_roles(tmp_path: Path) -> None:
    code, out, err = await _keys(tmp_path, "create", "--tenant", "acme", "--name", "alice", "--role", "operator")
    assert code == 0, err
    key_id = matched(KEY_RE, out.strip(), full=True)["id"]
    assert f"Created key {key_id} for tenant acme with role operator" in err
    code, out, _ = await _keys(tmp_path, "create", "--tenant", "acme")
    assert code == 0
    code, out, _ = await _keys(tmp_path, "list")
    assert code == 0 and "ROLE" in out.splitlines()[0]
    rows = {line.split()[0]: line.split()[2] for line in out.splitlines()[1:]}
    assert rows[key_id] == "operator" and sorted(rows.values()) == ["customer", "operator"]
    code, _, err = await _keys(tmp_path, "create", "--tenant", "acme", "--role", "root")
    assert code == 2 and "invalid choice: 'root'" in err
