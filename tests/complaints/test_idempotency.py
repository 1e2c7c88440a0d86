"""Idempotency keys: a complaint change repeated with its key answers instead of acting twice.

The store on a real SQLite file, the server over Streamable HTTP, and the service's own
``McpConnection`` retrying a call whose connection the server dropped after doing the work.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp_types import CallToolResult, TextContent

from msev15.agent.mcp_client import McpConnection
from msev15.complaints.models import ComplaintError
from msev15.complaints.server import build_server
from msev15.complaints.store import ComplaintStore
from msev15.mcpkit.meta import IDEMPOTENCY_META_KEY, RETENTION_SECONDS, TENANT_META_KEY
from tests.mcp_calls import as_meta

from .server import McpTestServer, running_mcp_server

COMPLAINT = {"customer_id": "CUST-1", "description": "The parcel arrived damaged", "order_id": "ORD-1"}


class _Clock:
    """Time that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> _Clock:
    return _Clock()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "db" / "complaints.db"


@pytest.fixture
def store(db_path: Path, clock: _Clock) -> Iterator[ComplaintStore]:
    with ComplaintStore(db_path, clock=clock) as opened:
        yield opened


def _keys_held(db_path: Path) -> int:
    with sqlite3.connect(db_path) as conn:
        count = conn.execute("SELECT COUNT(*) FROM idempotency_keys").fetchone()[0]
    conn.close()
    return int(count)


# --- the store --------------------------------------------------------------------------------


def test_a_repeated_registration_returns_the_first_complaint(store: ComplaintStore) -> None:
    first = store.register(**COMPLAINT, idempotency_key="k-1")
    again = store.register(**COMPLAINT, idempotency_key="k-1")
    assert again == first
    assert store.search(customer_id="CUST-1").total == 1


def test_without_a_key_every_registration_is_new(store: ComplaintStore) -> None:
    store.register(**COMPLAINT)
    store.register(**COMPLAINT)
    assert store.search(customer_id="CUST-1").total == 2


def test_a_key_reused_for_another_request_is_refused(store: ComplaintStore) -> None:
    store.register(**COMPLAINT, idempotency_key="k-1")
    with pytest.raises(ComplaintError, match=r"^idempotency key 'k-1' was already used for another request$"):
        store.register(**(COMPLAINT | {"description": "Something else"}), idempotency_key="k-1")
    first = store.search(customer_id="CUST-1").complaints[0]
    with pytest.raises(ComplaintError, match="already used for another request"):
        store.archive(first.id, idempotency_key="k-1")  # the same key for another operation
    assert store.search(customer_id="CUST-1").total == 1
    assert store.get(first.id).status == "open"


def test_keys_are_per_tenant(store: ComplaintStore) -> None:
    acme = store.register(**COMPLAINT, tenant_id="acme", idempotency_key="k-1")
    globex = store.register(**COMPLAINT, tenant_id="globex", idempotency_key="k-1")
    assert acme.id != globex.id
    assert store.register(**COMPLAINT, tenant_id="acme", idempotency_key="k-1") == acme


def test_repeated_status_changes_answer_with_the_complaint(store: ComplaintStore) -> None:
    complaint_id = store.register(**COMPLAINT).id
    started = store.update(complaint_id, status="in_progress", idempotency_key="k-update")
    assert store.update(complaint_id, status="in_progress", idempotency_key="k-update") == started
    resolved = store.resolve(complaint_id, "Refunded", idempotency_key="k-resolve")
    # Without the key a second resolve is refused; with it, the retry reports what happened.
    assert store.resolve(complaint_id, "Refunded", idempotency_key="k-resolve") == resolved
    with pytest.raises(ComplaintError, match="already resolved"):
        store.resolve(complaint_id, "Refunded")
    archived = store.archive(complaint_id, idempotency_key="k-archive")
    assert store.archive(complaint_id, idempotency_key="k-archive") == archived


def test_a_repeat_answers_with_the_complaint_as_it_is_now(store: ComplaintStore) -> None:
    created = store.register(**COMPLAINT, idempotency_key="k-1")
    store.update(created.id, priority="high")
    assert store.register(**COMPLAINT, idempotency_key="k-1").priority == "high"


def test_a_refused_change_keeps_no_key(store: ComplaintStore, db_path: Path) -> None:
    complaint_id = store.register(**COMPLAINT).id
    store.archive(complaint_id)
    with pytest.raises(ComplaintError, match="archived and can no longer be changed"):
        store.update(complaint_id, priority="low", idempotency_key="k-1")
    assert _keys_held(db_path) == 0


def test_keys_are_forgotten_after_the_retention(store: ComplaintStore, clock: _Clock, db_path: Path) -> None:
    first = store.register(**COMPLAINT, idempotency_key="k-old")
    clock.now += timedelta(seconds=RETENTION_SECONDS - 1)
    assert store.register(**COMPLAINT, idempotency_key="k-old") == first  # still held
    clock.now += timedelta(seconds=2)
    later = store.register(**COMPLAINT, idempotency_key="k-old")  # forgotten: a new complaint
    assert later.id != first.id
    store.register(**COMPLAINT, idempotency_key="k-new")
    assert _keys_held(db_path) == 2  # k-old (re-recorded) and k-new; the expired row went


def test_keys_survive_a_restart(db_path: Path, clock: _Clock) -> None:
    with ComplaintStore(db_path, clock=clock) as store:
        first = store.register(**COMPLAINT, idempotency_key="k-1")
    with ComplaintStore(db_path, clock=clock) as reopened:
        assert reopened.register(**COMPLAINT, idempotency_key="k-1") == first
        assert reopened.search(customer_id="CUST-1").total == 1


def test_a_database_from_before_keys_gains_the_table(db_path: Path, clock: _Clock) -> None:
    with ComplaintStore(db_path, clock=clock) as store:
        kept = store.register(**COMPLAINT)
    with sqlite3.connect(db_path) as conn:  # as the previous schema left it
        conn.execute("DROP TABLE idempotency_keys")
    conn.close()
    with ComplaintStore(db_path, clock=clock) as upgraded:
        assert upgraded.get(kept.id) == kept
        assert upgraded.register(**COMPLAINT, idempotency_key="k-1") == upgraded.register(**COMPLAINT,
                                                                                         idempotency_key="k-1")
    assert _keys_held(db_path) == 1


# --- the server -------------------------------------------------------------------------------


async def _call(client: Client, tool: str, meta: dict[str, Any], **args: Any) -> CallToolResult:
    return await client.call_tool(tool, args, meta=as_meta(meta))


def _text(result: CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, TextContent))


async def test_the_server_answers_a_repeated_call_with_the_first_result(complaints_server: McpTestServer) -> None:
    meta = {TENANT_META_KEY: "acme", IDEMPOTENCY_META_KEY: "call-1"}
    async with Client(complaints_server.url) as client:
        first = await _call(client, "register_complaint", meta, **COMPLAINT)
        again = await _call(client, "register_complaint", meta, **COMPLAINT)
        assert not first.is_error and not again.is_error
        assert again.structured_content == first.structured_content
        other = await _call(client, "register_complaint", meta, **(COMPLAINT | {"customer_id": "CUST-2"}))
        assert other.is_error and _text(other).endswith("idempotency key 'call-1' was already used for another "
                                                        "request")
    assert complaints_server.store is not None
    assert complaints_server.store.search(tenant_id="acme").total == 1


@pytest.mark.parametrize("key", ["", "has space", "x" * 129, 7])
async def test_the_server_refuses_a_malformed_key(complaints_server: McpTestServer, key: object) -> None:
    async with Client(complaints_server.url) as client:
        result = await _call(client, "register_complaint", {IDEMPOTENCY_META_KEY: key}, **COMPLAINT)
    assert result.is_error
    assert f"_meta['{IDEMPOTENCY_META_KEY}'] must be 1-128 characters" in _text(result)
    assert complaints_server.store is not None
    assert complaints_server.store.search().total == 0  # refused before anything was written


# --- the service's retry ----------------------------------------------------------------------


class _HeldClock:
    """A store clock that holds the first registration in the server's worker thread until released."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self._held = False

    def __call__(self) -> datetime:
        if not self._held:
            self._held = True
            self.entered.set()
            assert self.release.wait(10.0), "the test never released the held registration"
        return datetime.now(UTC)


async def test_a_retry_after_a_dropped_connection_registers_once(db_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    """The first attempt writes the complaint but its answer is lost with the connection; the
    service reconnects and retries with the same key, and gets that complaint back."""
    caplog.set_level(logging.INFO, logger="agent.mcp")
    held = _HeldClock()
    with ComplaintStore(db_path, clock=held) as store:
        async with running_mcp_server(build_server(store)) as running:
            conn = McpConnection("complaints", running.url, call_timeout=10.0, backoff_initial=0.01,
                                 backoff_max=0.05)
            conn.start()
            try:
                assert await conn.wait_connected(5.0), conn.last_error
                call = asyncio.create_task(conn.call_tool("register_complaint", dict(COMPLAINT), tenant_id="acme"))
                assert await asyncio.to_thread(held.entered.wait, 10.0)
                # The stop's first step (dropping every connection) is queued before the write
                # resumes, so the answer of the first attempt is lost; the write itself completes.
                stopping = asyncio.create_task(running.stop(abrupt=True))
                held.release.set()
                await stopping
                await running.start()
                created = await asyncio.wait_for(call, 10.0)
            finally:
                await conn.close()
        found = store.search(tenant_id="acme")
    assert any("retrying after reconnect" in r.getMessage() for r in caplog.records)  # it was retried
    assert found.total == 1 and found.complaints[0].id == created["id"]
