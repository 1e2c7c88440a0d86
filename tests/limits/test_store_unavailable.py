"""A full disk or read-only database: order writes end the turn with 503 ``store_unavailable``, and
readiness says not_ready until a write succeeds again.

The disk is filled for real, as SQLite sees it: ``PRAGMA max_page_count`` caps the database file
at its current size, so the next write that needs a page fails with SQLITE_FULL ("database or
disk is full"), exactly as on a full disk; a read-only file fails with SQLITE_READONLY.
"""

from __future__ import annotations

from pathlib import Path

from msev15.store.context import ORDERS
from msev15.store.orders import OrderRepository, StoreUnavailable
from tests.conftest import assert_envelope, make_settings, sse_events

CREATE = ("Please create an order for customer CUST-001: 2 x SKU WIDGET-9 at 19.99, "
          "ship to 1 Main St, Springfield")


async def _fill_the_disk(repo: OrderRepository) -> None:
    db = repo._db
    assert db is not None
    [(pages,)] = await db.execute_fetchall("PRAGMA page_count")
    await db.execute(f"PRAGMA max_page_count = {pages}")
    # Fill the free space inside the last pages too (big rows, then smaller ones), so that the
    # next insert of any size needs a new page.
    for size in (400, 100, 10, 1):
        for _ in range(400):
            try:
                await repo.create("filler", "C1", "SKU-1", 1, 1, "x" * size)
            except StoreUnavailable:
                break
        else:
            raise AssertionError("the capped database never filled up")


async def test_a_full_disk_gives_503_store_unavailable_and_readiness_until_a_write_succeeds(service) -> None:
    client = await service()
    app = client.server.app
    repo = app[ORDERS]
    assert (await client.get("/health/readiness")).status == 200
    await _fill_the_disk(repo)

    resp = await client.post("/api/v1/chat", json={"session_id": "s", "message": CREATE})
    assert resp.status == 503
    assert_envelope(await resp.json(), "store_unavailable")

    ready = await client.get("/health/readiness")
    assert ready.status == 503
    body = await ready.json()
    assert body["status"] == "not_ready" and body["checks"]["orders_store"] == "unavailable"

    streamed = sse_events(await (await client.post("/api/v1/chat/stream",
                                                   json={"session_id": "s2", "message": CREATE})).text())
    assert streamed[-1]["type"] == "error" and streamed[-1]["error"] == "store_unavailable"

    # Space again: the readiness probe's own write succeeds and the service is ready.
    assert repo._db is not None
    await repo._db.execute("PRAGMA max_page_count = 1000000")
    ready = await client.get("/health/readiness")
    assert ready.status == 200, await ready.text()
    resp = await client.post("/api/v1/chat", json={"session_id": "s3", "message": CREATE})
    assert resp.status == 200 and "ORD-" in (await resp.json())["message"]


async def test_reads_still_work_while_writes_are_refused(service) -> None:
    client = await service()
    repo = client.server.app[ORDERS]
    order = await repo.create("default", "CUST-7", "SKU-7", 1, 5, "7 Road")
    await _fill_the_disk(repo)
    question = f"where is order {order['order_id']}?"
    resp = await client.post("/api/v1/chat", json={"session_id": "r", "message": question})
    assert resp.status == 200
    assert order["order_id"] in (await resp.json())["message"]


async def test_a_read_only_database_is_store_unavailable_until_writable_again(tmp_path: Path) -> None:
    """SQLITE_READONLY, as a read-only mount gives it (``PRAGMA query_only``: file permissions mean
    nothing to root, which these tests may run as)."""
    repo = await OrderRepository.open(make_settings(tmp_path).order_db_path)
    try:
        assert repo._db is not None
        await repo._db.execute("PRAGMA query_only = ON")
        try:
            await repo.create("t", "C2", "SKU-2", 1, 1, "2 Road")
        except StoreUnavailable as exc:
            assert "try again later" in str(exc)
        else:
            raise AssertionError("a write to a read-only database succeeded")
        assert repo.write_failure and "readonly" in repo.write_failure
        assert not await repo.probe_write()
        await repo._db.execute("PRAGMA query_only = OFF")
        assert await repo.probe_write() and repo.write_failure is None
        assert await repo.count("store_probe_tenant") == 0  # the probe leaves nothing behind
    finally:
        await repo.close()
