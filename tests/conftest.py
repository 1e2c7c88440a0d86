"""Shared fixtures: settings on tmp_path, the scripted model, and the service built by create_app."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from msev15.app import create_app
from msev15.config import Settings
from tests.llm_server import ScriptedLLM
from tests.pg_server import PgCluster, start_cluster
from tests.redis_cluster import RedisCluster
from tests.redis_server import RedisServer


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Embedded defaults made hermetic: files under tmp_path, no MCP, no log file, no seed."""
    base = dict(
        order_db_path=str(tmp_path / "data" / "orders.db"),
        session_db_path=str(tmp_path / "data" / "sessions.db"),
        order_db_seed=False,
        api_keys_db_path=str(tmp_path / "data" / "api_keys.db"),  # tenant profiles live there too
        email_outbox_dir=str(tmp_path / "data" / "outbox"),
        email_attachments_dir=str(tmp_path / "data" / "attachments"),
        log_to_file=False,
        log_file_path=str(tmp_path / "logs" / "app.log"),
        mcp_server_url="",
        llm_provider="offline",
    )
    base.update(overrides)
    return Settings.defaults(**base)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
async def llm() -> AsyncIterator[ScriptedLLM]:
    async with ScriptedLLM() as server:
        yield server


ClientFactory = Callable[..., "TestClient"]


@pytest.fixture
def service(aiohttp_client: Any, tmp_path: Path) -> Callable[..., Any]:
    """``await service(**settings_overrides)`` -> a TestClient of the real app."""

    async def start(settings: Settings | None = None, **overrides: Any) -> TestClient:
        app = await create_app(settings or make_settings(tmp_path, **overrides))
        return await aiohttp_client(app)

    return start


async def chat_ok(client: TestClient, session: str, message: str, **extra: Any) -> dict[str, Any]:
    """POST /api/v1/chat for ``session``; its JSON reply, failing the test unless it is a 200."""
    resp = await client.post("/api/v1/chat", json={"session_id": session, "message": message, **extra})
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


def sse_events(text: str) -> list[dict[str, Any]]:
    """The JSON objects of an SSE body's ``data:`` lines (comments skipped).

    Split on line ends only as SSE defines them (not str.splitlines(), which also splits on
    U+2028 and friends that may appear raw inside our JSON)."""
    lines = re.split(r"\r\n|\r|\n", text)
    return [json.loads(line[len("data: "):]) for line in lines if line.startswith("data: ")]


def matched(pattern: str | re.Pattern[str], text: str, *, full: bool = False) -> re.Match[str]:
    """The match of ``pattern`` in ``text`` (``re.search``; ``re.fullmatch`` with ``full``), failing
    the test when there is none."""
    found = (re.fullmatch if full else re.search)(pattern, text)
    assert found is not None, f"{pattern!r} not in {text!r}"
    return found


def assert_envelope(body: dict[str, Any], error: str) -> None:
    assert body["error"] == error, body
    assert isinstance(body["message"], str) and body["message"]
    assert body["request_id"]
    assert body["timestamp"].endswith("Z")


@pytest.fixture
async def redis(tmp_path: Path) -> AsyncIterator[RedisServer]:
    """A real redis-server the test can stop, start, pause or kill (tests.redis_server)."""
    async with RedisServer(tmp_path / "redis") as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """One three-master Redis Cluster on loopback for the whole run (it takes ~2 s to form)."""
    with RedisCluster(tmp_path_factory.mktemp("redis-cluster")) as cluster:
        yield cluster


@pytest.fixture
def redis_cluster(redis_cluster_session: RedisCluster) -> RedisCluster:
    """The shared cluster, emptied for this test."""
    redis_cluster_session.flush()
    return redis_cluster_session


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """A redis-server's URL, for a test that never stops the server (synchronous, so an async
    fixture may ask for it by name)."""
    server = RedisServer(tmp_path / "redis-url").start_blocking()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """One throwaway PostgreSQL cluster for the whole test session (tests/pg_server.py); the tests
    that use it skip when the binaries are missing, except under CI=true, where they fail."""
    cluster = start_cluster(pytest.skip)
    assert cluster is not None
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def database_url(pg_cluster: PgCluster) -> str:
    """A fresh, empty database for the test module (the next module gets another)."""
    return pg_cluster.create_database()


@pytest.fixture
def pair(aiohttp_client: Any, tmp_path: Path, redis: RedisServer, llm: ScriptedLLM) -> Any:
    """``await pair(**settings_overrides)`` -> instances a and b on ``redis`` with the scripted model
    (tests.instances.two_apps)."""
    from tests.instances import two_apps  # it imports make_settings from here

    async def start(**overrides: Any) -> Any:
        return await two_apps(aiohttp_client, tmp_path, redis.url, llm, **overrides)

    return start
