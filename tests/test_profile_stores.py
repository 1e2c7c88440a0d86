"""The tenant profile store contract, run against every implementation.

A new backend joins by adding one entry to :data:`FACTORIES`: a coroutine that opens a store on
the test's shared backend; a second call must reach the same data, as another instance would (the
memory store is one process: it hands back the same store).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from msev15.store.pg_profiles import PostgresProfiles
from msev15.store.profile_model import ProfileInvalid
from msev15.store.profiles import MemoryProfiles, ProfilesFull, ProfileStore, VersionConflict
from msev15.store.redis_profiles import RedisProfiles
from msev15.store.sqlite_profiles import SqliteProfiles

Factory = Callable[[pytest.FixtureRequest, Path, int], Awaitable[ProfileStore]]
_MEMORY: dict[Path, MemoryProfiles] = {}


async def _memory(request: pytest.FixtureRequest, tmp_path: Path, max_versions: int) -> ProfileStore:
    return _MEMORY.setdefault(tmp_path, MemoryProfiles(max_versions=max_versions))


async def _sqlite(request: pytest.FixtureRequest, tmp_path: Path, max_versions: int) -> ProfileStore:
    return SqliteProfiles(tmp_path / "api_keys.db", max_versions=max_versions)


async def _redis(request: pytest.FixtureRequest, tmp_path: Path, max_versions: int) -> ProfileStore:
    return RedisProfiles(request.getfixturevalue("redis_url"), max_versions=max_versions)


async def _redis_cluster(request: pytest.FixtureRequest, tmp_path: Path, max_versions: int) -> ProfileStore:
    return RedisProfiles(request.getfixturevalue("redis_cluster").url, max_versions=max_versions)


_DATABASES: dict[Path, str] = {}


async def _postgres(request: pytest.FixtureRequest, tmp_path: Path, max_versions: int) -> ProfileStore:
    """Each call another instance (its own pool) on the test's fresh database."""
    if tmp_path not in _DATABASES:
        _DATABASES[tmp_path] = request.getfixturevalue("pg_cluster").create_database("profiles")
    return PostgresProfiles(_DATABASES[tmp_path], max_versions=max_versions)


FACTORIES: dict[str, Factory] = {"memory": _memory, "sqlite": _sqlite, "redis": _redis,
                                 "redis-cluster": _redis_cluster, "postgres": _postgres}

OpenStore = Callable[..., Awaitable[ProfileStore]]

PROFILE = {"instructions": "Be brief.", "tools": {"allow": ["lookup_*"]}}


@pytest.fixture(params=list(FACTORIES))
async def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[OpenStore]:
    """``await open_store(max_versions=…)``: each call another instance on the same backend."""
    factory = FACTORIES[request.param]
    opened: list[ProfileStore] = []

    async def open_(max_versions: int = 50) -> ProfileStore:
        store = await factory(request, tmp_path, max_versions)
        opened.append(store)
        return store

    yield open_
    _MEMORY.pop(tmp_path, None)
    _DATABASES.pop(tmp_path, None)
    for store in opened:
        await store.close()


async def test_a_tenant_without_a_profile_has_the_defaults(open_store: OpenStore) -> None:
    store = await open_store()
    assert await store.current("acme") is None
    assert await store.current_version("acme") == 0
    assert await store.versions("acme") == []
    assert await store.version("acme", 1) is None
    assert await store.delete("acme", "admin") is False


async def test_versions_count_up_per_tenant_and_the_newest_is_current(open_store: OpenStore) -> None:
    store = await open_store()
    assert await store.put("acme", PROFILE, "k1") == 1
    assert await store.put("acme", {"greeting": "Hello"}, "k2") == 2
    assert await store.put("other", {"greeting": "Hi"}, "k3") == 1, "versions are per tenant"
    current = await store.current("acme")
    assert current is not None
    assert (current.tenant_id, current.version, current.updated_by) == ("acme", 2, "k2")
    assert current.profile == {"greeting": "Hello"}
    assert current.parsed.greeting == "Hello"
    assert await store.current_version("acme") == 2
    assert [r.version for r in await store.versions("acme")] == [2, 1]
    first = await store.version("acme", 1)
    assert first is not None and first.profile == PROFILE and first.parsed.tools_allow == ("lookup_*",)
    assert first.updated_at <= current.updated_at


async def test_an_invalid_profile_is_refused_and_nothing_changes(open_store: OpenStore) -> None:
    store = await open_store()
    await store.put("acme", PROFILE, "k1")
    with pytest.raises(ProfileInvalid) as caught:
        await store.put("acme", {"model": {"api": "soap"}, "nope": 1}, "k1")
    assert {p["field"] for p in caught.value.problems} == {"model.api", "nope"}
    assert await store.current_version("acme") == 1
    assert [r.version for r in await store.versions("acme")] == [1]


async def test_the_stored_profile_is_a_copy(open_store: OpenStore) -> None:
    store = await open_store()
    mine = {"tools": {"allow": ["a"]}}
    await store.put("acme", mine, "k1")
    mine["tools"]["allow"].append("b")
    current = await store.current("acme")
    assert current is not None and current.profile == {"tools": {"allow": ["a"]}}


async def test_a_conditional_write_needs_the_current_version(open_store: OpenStore) -> None:
    store = await open_store()
    assert await store.put("acme", PROFILE, "k1", if_version=0) == 1, "0: only when none is current"
    with pytest.raises(VersionConflict) as caught:
        await store.put("acme", PROFILE, "k1", if_version=0)
    assert caught.value.current == 1
    assert await store.put("acme", PROFILE, "k1", if_version=1) == 2
    with pytest.raises(VersionConflict):
        await store.put("acme", PROFILE, "k1", if_version=1)
    assert await store.current_version("acme") == 2


async def test_of_racing_conditional_writes_from_two_instances_exactly_one_wins(open_store: OpenStore) -> None:
    one, two = await open_store(), await open_store()
    await one.put("acme", PROFILE, "k0")
    writes = [store.put("acme", {"greeting": f"g{i}"}, f"k{i}", if_version=1)
              for i, store in enumerate([one, two] * 8)]
    results = await asyncio.gather(*writes, return_exceptions=True)
    won = [r for r in results if isinstance(r, int)]
    lost = [r for r in results if isinstance(r, VersionConflict)]
    assert won == [2], results
    assert len(lost) == 15 and all(e.current == 2 for e in lost)
    assert [r.version for r in await two.versions("acme")] == [2, 1]


async def test_a_write_on_one_instance_is_current_on_the_other_at_once(open_store: OpenStore) -> None:
    one, two = await open_store(), await open_store()
    await one.put("acme", {"greeting": "first"}, "k1")
    seen = await two.current("acme")  # the reader now holds version 1 in its cache
    assert seen is not None and seen.version == 1
    await one.put("acme", {"greeting": "second"}, "k1")
    assert await two.current_version("acme") == 2
    now = await two.current("acme")
    assert now is not None and now.profile == {"greeting": "second"}
    await one.delete("acme", "k1")
    assert await two.current("acme") is None and await two.current_version("acme") == 0


async def test_rollback_writes_a_new_version_equal_to_the_old_one(open_store: OpenStore) -> None:
    store = await open_store()
    await store.put("acme", PROFILE, "k1")
    await store.put("acme", {"greeting": "Hello"}, "k1")
    assert await store.rollback("acme", 1, "k2") == 3
    current = await store.current("acme")
    assert current is not None and (current.version, current.profile, current.updated_by) == (3, PROFILE, "k2")
    assert [r.version for r in await store.versions("acme")] == [3, 2, 1]
    with pytest.raises(LookupError):
        await store.rollback("acme", 9, "k2")
    assert await store.current_version("acme") == 3


async def test_delete_goes_back_to_the_defaults_and_keeps_the_history(open_store: OpenStore) -> None:
    store = await open_store()
    await store.put("acme", PROFILE, "k1")
    await store.put("acme", {"greeting": "Hello"}, "k1")
    assert await store.delete("acme", "k1") is True
    assert await store.current("acme") is None and await store.current_version("acme") == 0
    assert await store.delete("acme", "k1") is False, "nothing current any more"
    assert [r.version for r in await store.versions("acme")] == [2, 1]
    with pytest.raises(VersionConflict):
        await store.put("acme", PROFILE, "k1", if_version=2)
    assert await store.rollback("acme", 2, "k1") == 3, "history kept: a deleted version can come back"
    assert await store.put("acme", PROFILE, "k1", if_version=3) == 4


async def test_one_tenant_never_reads_or_restores_another_tenants_versions(open_store: OpenStore) -> None:
    store = await open_store()
    await store.put("acme", PROFILE, "k1")
    assert await store.current("globex") is None
    assert await store.version("globex", 1) is None
    assert await store.versions("globex") == []
    with pytest.raises(LookupError):
        await store.rollback("globex", 1, "k9")
    assert await store.delete("globex", "k9") is False
    assert await store.current_version("acme") == 1


async def test_history_keeps_the_newest_versions_only(open_store: OpenStore) -> None:
    store = await open_store(max_versions=3)
    for i in range(5):
        await store.put("acme", {"greeting": f"g{i}"}, "k1")
    assert [r.version for r in await store.versions("acme")] == [5, 4, 3]
    assert await store.version("acme", 2) is None
    with pytest.raises(LookupError):
        await store.rollback("acme", 1, "k1")


async def test_the_memory_store_bounds_its_tenants() -> None:
    store = MemoryProfiles(max_tenants=2)
    await store.put("a", {}, "k")
    await store.put("b", {}, "k")
    with pytest.raises(ProfilesFull):
        await store.put("c", {}, "k")
    assert await store.put("a", {"greeting": "x"}, "k") == 2, "a tenant it holds can still write"


async def test_a_record_never_shows_its_profile_in_its_repr(open_store: OpenStore) -> None:
    store = await open_store()
    await store.put("acme", {"mcp_servers": [{"name": "crm", "url": "https://crm.example/mcp",
                                              "headers": {"Authorization": "Bearer s3cret"}}]}, "k1")
    current = await store.current("acme")
    assert current is not None
    assert "s3cret" not in repr(current) and "s3cret" not in repr(current.parsed)


async def test_sqlite_turns_read_the_committed_version_while_another_process_writes(tmp_path: Path) -> None:
    """The per-turn read runs on the event loop: a write transaction held open elsewhere (another
    process on the same file) must neither block it nor show it uncommitted work."""
    import sqlite3

    store = SqliteProfiles(tmp_path / "api_keys.db")
    try:
        await store.put("acme", PROFILE, "k1")
        other = sqlite3.connect(tmp_path / "api_keys.db", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        other.execute("UPDATE profile_heads SET current = 0 WHERE tenant_id = 'acme'")
        assert await store.current_version("acme") == 1, "the committed version, not the open write"
        other.execute("COMMIT")
        assert await store.current_version("acme") == 0, "the commit is seen by the next read"
        other.close()
    finally:
        await store.close()


async def test_sqlite_a_write_locked_out_past_the_busy_timeout_is_store_unavailable(tmp_path: Path) -> None:
    import sqlite3

    from msev15.store.base import StoreUnavailable

    store = SqliteProfiles(tmp_path / "api_keys.db", busy_timeout=0.05)
    other = sqlite3.connect(tmp_path / "api_keys.db", isolation_level=None)
    try:
        await store.put("acme", PROFILE, "k1")
        other.execute("BEGIN IMMEDIATE")  # another process writing, and not letting go
        with pytest.raises(StoreUnavailable):
            await store.put("acme", PROFILE, "k1")
        assert await store.current_version("acme") == 1, "reads go on"
        other.execute("ROLLBACK")
        assert await store.put("acme", PROFILE, "k1") == 2, "and writes once the lock is gone"
    finally:
        other.close()
        await store.close()


async def test_redis_unreachable_is_store_unavailable() -> None:
    import socket

    from msev15.store.base import StoreUnavailable

    with socket.socket() as sock:  # a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store = RedisProfiles(f"redis://127.0.0.1:{port}/0")
    try:
        with pytest.raises(StoreUnavailable):
            await store.current_version("acme")
        with pytest.raises(StoreUnavailable):
            await store.put("acme", PROFILE, "k1")
    finally:
        await store.close()
