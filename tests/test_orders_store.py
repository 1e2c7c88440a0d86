"""The order store contract: OrderRepository against real SQLite files and PostgresOrders against a
real PostgreSQL (a fresh database per test). Tests that read the SQLite file itself (``db_path``)
or open repositories by path are SQLite's own."""

from __future__ import annotations

import asyncio
import itertools
import re
import sqlite3
from collections.abc import AsyncIterator, Awaitable
from contextlib import closing
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from msev15.store.order_store import OrderStore
from msev15.store.orders import (
    MAX_LIMIT,
    SCHEMA_VERSION,
    InvalidTransition,
    OrderError,
    OrderNotFound,
    OrderRepository,
    OrderValidationError,
    new_order_id,
)
from msev15.store.pg_kit import open_database
from msev15.store.pg_orders import PostgresOrders

A, B = "tenant-a", "tenant-b"
ID_RE = re.compile(r"ORD-[0-9ABCDEFGHJKMNPQRSTVWXYZ]{8}")
ISO_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
GOOD = {"customer_id": "CUST-1", "product_sku": "SKU-1", "quantity": 2, "price": 19.99,
        "shipping_address": "1 Main Street, Springfield"}


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "orders.db"


@pytest.fixture(params=["sqlite", "postgres"])
async def repo(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[OrderStore]:
    if request.param == "sqlite":
        store: OrderStore = await OrderRepository.open(tmp_path / "data" / "orders.db")
        yield store
        await store.close()
        return
    if "db_path" in request.fixturenames:
        pytest.skip("reads the SQLite file itself")
    database = await open_database(request.getfixturevalue("pg_cluster").create_database("orders"))
    yield PostgresOrders(database)
    await database.close()


def raw(path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Read the file with a separate plain sqlite3 connection (what another process would see)."""
    with closing(sqlite3.connect(path)) as conn:
        return conn.execute(sql, params).fetchall()


async def make(repo: OrderStore, tenant: str = A, **changes: Any) -> dict[str, Any]:
    return await repo.create(tenant, **{**GOOD, **changes})


def ids(orders: list[dict[str, Any]]) -> list[str]:
    return [o["order_id"] for o in orders]


# --- opening, schema, migrations ---------------------------------------------------------------


async def test_open_creates_the_folder_and_uses_wal(repo: OrderStore, db_path: Path) -> None:
    assert db_path.is_file()
    assert raw(db_path, "PRAGMA journal_mode") == [("wal",)]


async def test_schema_has_the_tenant_indexes(repo: OrderStore, db_path: Path) -> None:
    names = {r[0] for r in raw(db_path, "SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"idx_orders_customer", "idx_orders_sku", "idx_orders_status", "idx_orders_created"} <= names
    plan = " ".join(r[3] for r in raw(db_path, "EXPLAIN QUERY PLAN SELECT * FROM orders "
                                      "WHERE tenant_id = 'x' AND product_sku = 'y'"))
    assert "idx_orders_sku" in plan


async def test_migrations_are_idempotent(db_path: Path) -> None:
    for _ in range(3):
        repo = await OrderRepository.open(db_path)
        await make(repo)
        await repo.close()
    assert [r[0] for r in raw(db_path, "SELECT version FROM schema_version")] == [SCHEMA_VERSION]
    assert raw(db_path, "SELECT COUNT(*) FROM orders") == [(3,)]


async def test_two_repositories_opening_together_migrate_once(db_path: Path) -> None:
    first, second = await asyncio.gather(OrderRepository.open(db_path), OrderRepository.open(db_path))
    await first.close()
    await second.close()
    assert [r[0] for r in raw(db_path, "SELECT version FROM schema_version")] == [SCHEMA_VERSION]


async def test_a_newer_schema_version_is_refused(db_path: Path) -> None:
    await (await OrderRepository.open(db_path)).close()
    with closing(sqlite3.connect(db_path)) as conn, conn:
        conn.execute("INSERT INTO schema_version VALUES (?, 'later')", (SCHEMA_VERSION + 1,))
    with pytest.raises(OrderError, match="newer than this program supports"):
        await OrderRepository.open(db_path)


async def test_a_file_that_is_not_a_database_is_refused(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    db_path.write_bytes(b"this is not a database, just some text" * 100)
    with pytest.raises(OrderError, match=r"cannot use .* as the order database"):
        await OrderRepository.open(db_path)


async def test_a_folder_that_cannot_be_created_is_reported(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(OrderError, match="cannot create the folder"):
        await OrderRepository.open(tmp_path / "file" / "orders.db")


async def test_a_closed_repository_says_so(db_path: Path) -> None:
    repo = await OrderRepository.open(db_path)
    await repo.ping()
    await repo.close()
    await repo.close()
    with pytest.raises(OrderError, match="closed"):
        await repo.count(A)


# --- seeding --------------------------------------------------------------------------------------


async def test_seeding_fills_an_empty_database_for_the_default_tenant_only(db_path: Path) -> None:
    repo = await OrderRepository.open(db_path, seed=True)
    try:
        orders = await repo.list_orders("default")
        assert len(orders) == 5
        assert {o["status"] for o in orders} == {"pending", "confirmed", "shipped", "delivered", "cancelled"}
        assert all(ID_RE.fullmatch(o["order_id"]) for o in orders)
        assert await repo.count(A) == 0
    finally:
        await repo.close()


async def test_seeding_again_adds_nothing(db_path: Path) -> None:
    await (await OrderRepository.open(db_path, seed=True)).close()
    repo = await OrderRepository.open(db_path, seed=True)
    try:
        assert await repo.count("default") == 5
        assert await repo.seed_demo_orders() == 0
    finally:
        await repo.close()


async def test_no_seeding_unless_asked(repo: OrderStore) -> None:
    assert await repo.count("default") == 0


async def test_seeding_skips_a_default_tenant_that_has_orders(db_path: Path) -> None:
    repo = await OrderRepository.open(db_path)
    await make(repo, "default")
    await make(repo, A)
    await repo.close()
    repo = await OrderRepository.open(db_path, seed=True)
    try:
        assert await repo.count("default") == 1
        assert await repo.seed_demo_orders(A) == 0
        assert await repo.seed_demo_orders(B) == 5
    finally:
        await repo.close()


# --- create ---------------------------------------------------------------------------------------


async def test_create_returns_the_stored_order(repo: OrderStore, db_path: Path) -> None:
    order = await make(repo, notes="  ring twice ")
    assert ID_RE.fullmatch(order["order_id"])
    assert order | {"order_id": "x", "created_at": "t", "updated_at": "t"} == {
        "order_id": "x", "customer_id": "CUST-1", "product_sku": "SKU-1", "quantity": 2, "price": 19.99,
        "total": 39.98, "shipping_address": "1 Main Street, Springfield", "status": "pending",
        "notes": "ring twice", "created_at": "t", "updated_at": "t"}
    assert ISO_RE.fullmatch(order["created_at"]) and order["updated_at"] == order["created_at"]
    assert await repo.get(A, order["order_id"]) == order
    assert raw(db_path, "SELECT tenant_id, price_cents FROM orders") == [(A, 1999)]


async def test_money_is_exact_cents(repo: OrderStore, db_path: Path) -> None:
    tiny = await make(repo, price=0.1, quantity=3)
    big = await make(repo, price=Decimal("1000000"), quantity=7)
    text = await make(repo, price="0.07", quantity=10000)
    assert (tiny["price"], tiny["total"]) == (0.1, 0.3)
    assert big["total"] == 7_000_000.0
    assert text["total"] == 700.0
    free = await make(repo, price=0, quantity=1)
    assert (free["price"], free["total"]) == (0.0, 0.0)


async def test_create_accepts_an_integral_float_quantity(repo: OrderStore) -> None:
    assert (await make(repo, quantity=4.0))["quantity"] == 4


@pytest.mark.parametrize(("field", "value", "message"), [
    ("quantity", 0, "quantity must be a whole number from 1 to 10000"),
    ("quantity", -3, "quantity must be a whole number"),
    ("quantity", 1.5, "quantity must be a whole number"),
    ("quantity", True, "quantity must be a whole number"),
    ("quantity", "2", "quantity must be a whole number"),
    ("quantity", 10001, "quantity must be a whole number"),
    ("price", -0.01, "price must be a number from 0"),
    ("price", 1000000.01, "price must be a number from 0"),
    ("price", float("nan"), "price must be a number"),
    ("price", float("inf"), "price must be a number"),
    ("price", "ten", "price must be a number"),
    ("price", True, "price must be a number"),
    ("price", None, "price must be a number"),
    ("price", 19.999, "at most 2 decimal places"),
    ("customer_id", "", "customer_id must not be empty"),
    ("customer_id", "   ", "customer_id must not be empty"),
    ("customer_id", 42, "customer_id must be text"),
    ("customer_id", "C" * 101, "customer_id must be at most 100 characters"),
    ("customer_id", "C\n1", "customer_id must not contain control characters"),
    ("product_sku", "", "product_sku must not be empty"),
    ("shipping_address", " ", "shipping_address must not be empty"),
    ("shipping_address", "x" * 501, "shipping_address must be at most 500"),
    ("status", "lost", "unknown status 'lost'; use one of: pending, confirmed, shipped, delivered, cancelled"),
    ("notes", "n" * 2001, "notes must be at most 2000"),
])
async def test_create_rejects_bad_input(repo: OrderStore, field: str, value: Any, message: str) -> None:
    with pytest.raises(OrderValidationError, match=re.escape(message)):
        await make(repo, **{field: value})
    assert await repo.count(A) == 0


async def test_create_accepts_a_multi_line_address(repo: OrderStore) -> None:
    order = await make(repo, shipping_address="1 Main Street\nSpringfield")
    assert order["shipping_address"] == "1 Main Street\nSpringfield"


@pytest.mark.parametrize("tenant", ["", "  ", None, "t" * 129, "a/b", "..", "x\n"])
async def test_a_missing_tenant_is_refused(repo: OrderStore, tenant: Any) -> None:
    with pytest.raises(OrderValidationError, match=r"tenant_id must be (a string|1-128 characters)"):
        await make(repo, tenant)


async def test_an_id_collision_draws_another_id(db_path: Path) -> None:
    drawn = iter(["ORD-AAAAAAAA", "ORD-AAAAAAAA", "ORD-BBBBBBBB"])
    repo = await OrderRepository.open(db_path, id_factory=lambda: next(drawn))
    try:
        assert (await make(repo, A))["order_id"] == "ORD-AAAAAAAA"
        assert (await make(repo, B))["order_id"] == "ORD-BBBBBBBB"  # ids are unique across tenants
    finally:
        await repo.close()


async def test_seeding_draws_new_ids_on_a_collision(db_path: Path) -> None:
    drawn = itertools.chain(["ORD-AAAAAAAA", "ORD-AAAAAAAA"], iter(new_order_id, None))
    repo = await OrderRepository.open(db_path, id_factory=lambda: next(drawn))
    try:
        await make(repo, B)  # takes ORD-AAAAAAAA, which the first seeding attempt draws again
        assert await repo.seed_demo_orders() == 5
        assert "ORD-AAAAAAAA" not in ids(await repo.list_orders("default"))
    finally:
        await repo.close()


async def test_an_id_factory_returning_bad_ids_is_caught(db_path: Path) -> None:
    repo = await OrderRepository.open(db_path, id_factory=lambda: "order-1")
    try:
        with pytest.raises(ValueError, match="id factory returned 'order-1'"):
            await make(repo)
    finally:
        await repo.close()


async def test_endless_collisions_end_with_a_clear_error(db_path: Path) -> None:
    repo = await OrderRepository.open(db_path, id_factory=lambda: "ORD-AAAAAAAA")
    try:
        await make(repo)
        with pytest.raises(OrderError, match="could not allocate a unique order id"):
            await make(repo)
    finally:
        await repo.close()


# --- get, by_customer, list, count --------------------------------------------------------------


async def test_get_ignores_case_and_spaces(repo: OrderStore) -> None:
    order = await make(repo)
    assert await repo.get(A, f"  {order['order_id'].lower()} ") == order


async def test_get_unknown_id_is_not_found(repo: OrderStore) -> None:
    with pytest.raises(OrderNotFound, match=r"^no order ORD-ZZZZZZZZ found$"):
        await repo.get(A, "ORD-ZZZZZZZZ")


@pytest.mark.parametrize("bad", ["12345", "", "ORD-123", "ORD-ABCDEFGH1", 17])
async def test_get_malformed_id_is_not_found_with_a_hint(repo: OrderStore, bad: Any) -> None:
    with pytest.raises(OrderNotFound, match="order ids look like ORD-"):
        await repo.get(A, bad)


async def test_by_customer_newest_first_ignoring_case(repo: OrderStore) -> None:
    first = await make(repo, customer_id="CUST-7")
    second = await make(repo, customer_id="cust-7")
    await make(repo, customer_id="CUST-8")
    assert ids(await repo.by_customer(A, "Cust-7")) == [second["order_id"], first["order_id"]]
    assert ids(await repo.by_customer(A, "CUST-7", limit=1)) == [second["order_id"]]
    assert await repo.by_customer(A, "CUST-9") == []


async def test_by_customer_rejects_an_empty_customer(repo: OrderStore) -> None:
    with pytest.raises(OrderValidationError, match="customer_id must not be empty"):
        await repo.by_customer(A, " ")


async def test_list_is_newest_first_with_a_default_limit(repo: OrderStore) -> None:
    made = [await make(repo, quantity=i) for i in range(1, 56)]
    listed = await repo.list_orders(A)
    assert len(listed) == 50
    assert ids(listed) == ids(made[::-1][:50])
    assert len(await repo.list_orders(A, limit=MAX_LIMIT)) == 55
    assert await repo.count(A) == 55


@pytest.mark.parametrize("limit", [0, -1, MAX_LIMIT + 1, 2.5, True, "10"])
async def test_list_rejects_a_bad_limit(repo: OrderStore, limit: Any) -> None:
    with pytest.raises(OrderValidationError, match="limit must be a whole number from 1 to 500"):
        await repo.list_orders(A, limit=limit)


# --- search -------------------------------------------------------------------------------------


async def test_search_by_sku_address_and_status(repo: OrderStore) -> None:
    london = await make(repo, product_sku="MUG-RED", shipping_address="5 Fleet St, London")
    paris = await make(repo, product_sku="MUG-BLUE", shipping_address="9 Rue Cler, Paris")
    await repo.update_status(A, paris["order_id"], "confirmed")
    assert ids(await repo.search(A, sku="mug-red")) == [london["order_id"]]
    assert ids(await repo.search(A, sku="MUG")) == []  # SKU matches exactly
    assert ids(await repo.search(A, address="LONDON")) == [london["order_id"]]
    assert ids(await repo.search(A, status="confirmed")) == [paris["order_id"]]
    assert ids(await repo.search(A, address="st", status="pending")) == [london["order_id"]]
    assert await repo.search(A, sku="MUG-BLUE", status="pending") == []
    assert len(await repo.search(A, address="a", limit=1)) == 1


async def test_search_treats_like_wildcards_literally(repo: OrderStore) -> None:
    percent = await make(repo, shipping_address="Unit 100% Road")
    await make(repo, shipping_address="Unit 1000 Road")
    under = await make(repo, shipping_address="Flat a_b Lane")
    await make(repo, shipping_address="Flat axb Lane")
    slash = await make(repo, shipping_address="Box C:\\mail\\%")
    assert ids(await repo.search(A, address="100%")) == [percent["order_id"]]
    assert ids(await repo.search(A, address="a_b")) == [under["order_id"]]
    assert ids(await repo.search(A, address="\\mail\\%")) == [slash["order_id"]]
    assert await repo.search(A, address="%") == [await repo.get(A, slash["order_id"]),
                                                 await repo.get(A, percent["order_id"])]
    assert await repo.search(A, address="_") == [await repo.get(A, under["order_id"])]


async def test_search_needs_a_criterion(repo: OrderStore) -> None:
    with pytest.raises(OrderValidationError, match="at least one search criterion"):
        await repo.search(A)


@pytest.mark.parametrize(("criteria", "message"), [
    ({"sku": ""}, "sku must not be empty"),
    ({"address": "  "}, "address must not be empty"),
    ({"status": "gone"}, "unknown status 'gone'"),
    ({"status": "pending", "limit": 0}, "limit must be a whole number"),
])
async def test_search_rejects_bad_criteria(repo: OrderStore, criteria: dict[str, Any], message: str) -> None:
    with pytest.raises(OrderValidationError, match=message):
        await repo.search(A, **criteria)


# --- status transitions -------------------------------------------------------------------------


async def test_an_order_goes_through_its_life(repo: OrderStore) -> None:
    order = await make(repo)
    for previous, status in [("pending", "confirmed"), ("confirmed", "shipped"), ("shipped", "delivered")]:
        updated = await repo.update_status(A, order["order_id"], status)
        assert (updated["previous_status"], updated["status"]) == (previous, status)
        assert updated["updated_at"] >= updated["created_at"]
    assert (await repo.get(A, order["order_id"]))["status"] == "delivered"


@pytest.mark.parametrize("path", [["confirmed", "cancelled"], ["cancelled"]])
async def test_pending_and_confirmed_orders_can_be_cancelled(repo: OrderStore, path: list[str]) -> None:
    order = await make(repo)
    for status in path:
        await repo.update_status(A, order["order_id"], status)
    assert (await repo.get(A, order["order_id"]))["status"] == "cancelled"


@pytest.mark.parametrize(("path", "target", "hint"), [
    (["confirmed", "shipped", "delivered"], "pending", "delivered is a final status"),
    ([], "shipped", "allowed next: confirmed, cancelled"),
    ([], "delivered", "allowed next: confirmed, cancelled"),
    (["cancelled"], "confirmed", "cancelled is a final status"),
    (["confirmed", "shipped"], "cancelled", "allowed next: delivered"),
    (["confirmed"], "pending", "allowed next: shipped, cancelled"),
])
async def test_disallowed_transitions_are_refused(repo: OrderStore, path: list[str], target: str,
                                                  hint: str) -> None:
    order = await make(repo)
    for status in path:
        await repo.update_status(A, order["order_id"], status)
    before = await repo.get(A, order["order_id"])
    with pytest.raises(InvalidTransition, match=f"cannot become {target}; {hint}"):
        await repo.update_status(A, order["order_id"], target)
    assert await repo.get(A, order["order_id"]) == before


async def test_setting_the_same_status_changes_nothing(repo: OrderStore) -> None:
    order = await make(repo)
    same = await repo.update_status(A, order["order_id"], "PENDING")
    assert same == {**order, "previous_status": "pending"}


async def test_update_of_an_unknown_order_is_not_found(repo: OrderStore) -> None:
    with pytest.raises(OrderNotFound, match="no order ORD-ZZZZZZZZ found"):
        await repo.update_status(A, "ORD-ZZZZZZZZ", "confirmed")


async def test_update_to_an_unknown_status_is_refused(repo: OrderStore) -> None:
    order = await make(repo)
    with pytest.raises(OrderValidationError, match="unknown status 'returned'"):
        await repo.update_status(A, order["order_id"], "returned")


async def test_concurrent_updates_apply_exactly_one_transition(repo: OrderStore) -> None:
    order = await make(repo)
    results = await asyncio.gather(*(repo.update_status(A, order["order_id"], s)
                                     for s in ["confirmed", "cancelled"] * 10), return_exceptions=True)
    # Whatever the interleaving, cancelled wins and each transition happened at most once.
    assert all(isinstance(r, dict | InvalidTransition) for r in results)
    assert (await repo.get(A, order["order_id"]))["status"] == "cancelled"
    changes = sorted((r["previous_status"], r["status"]) for r in results
                     if isinstance(r, dict) and r["previous_status"] != r["status"])
    assert changes in ([("pending", "cancelled")], [("confirmed", "cancelled"), ("pending", "confirmed")])


# --- tenant isolation ---------------------------------------------------------------------------


async def test_tenants_never_see_each_others_orders(repo: OrderStore) -> None:
    mine = await make(repo, A, customer_id="CUST-1", product_sku="SKU-1", shipping_address="Oak Road")
    oid = mine["order_id"]
    with pytest.raises(OrderNotFound) as other:
        await repo.get(B, oid)
    with pytest.raises(OrderNotFound) as unknown:
        await repo.get(B, "ORD-ZZZZZZZZ")
    assert str(other.value) == str(unknown.value).replace("ORD-ZZZZZZZZ", oid)
    with pytest.raises(OrderNotFound):
        await repo.update_status(B, oid, "cancelled")
    assert await repo.by_customer(B, "CUST-1") == []
    assert await repo.search(B, sku="SKU-1") == []
    assert await repo.search(B, address="Oak") == []
    assert await repo.search(B, status="pending") == []
    assert await repo.list_orders(B) == []
    assert await repo.count(B) == 0
    assert await repo.get(A, oid) == mine


# --- concurrency --------------------------------------------------------------------------------


async def test_fifty_concurrent_creates_make_fifty_rows(repo: OrderStore, db_path: Path) -> None:
    orders = await asyncio.gather(*(make(repo, quantity=i + 1) for i in range(50)))
    assert len(set(ids(orders))) == 50
    assert await repo.count(A) == 50
    assert raw(db_path, "SELECT COUNT(*) FROM orders") == [(50,)]


async def test_two_writers_on_one_file_never_hit_a_locked_database(db_path: Path) -> None:
    first, second = await OrderRepository.open(db_path), await OrderRepository.open(db_path)
    try:
        work: list[Awaitable[Any]] = [make(first if i % 2 else second, quantity=i + 1) for i in range(100)]
        work += [first.list_orders(A) for _ in range(20)] + [second.count(A) for _ in range(20)]
        results = await asyncio.gather(*work)
        created = results[:100]
        assert len(set(ids(created))) == 100
        assert await first.count(A) == await second.count(A) == 100
        updates = await asyncio.gather(*(
            (first if i % 2 else second).update_status(A, o["order_id"], "confirmed")
            for i, o in enumerate(created)))
        assert {u["status"] for u in updates} == {"confirmed"}
    finally:
        await first.close()
        await second.close()


async def test_a_writer_waits_for_a_lock_held_elsewhere(repo: OrderStore, db_path: Path) -> None:
    # Another process holds the write lock; our create queues behind it instead of failing.
    with closing(sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)) as other:
        other.execute("BEGIN IMMEDIATE")
        other.execute("INSERT INTO orders (order_id, tenant_id, customer_id, product_sku, quantity, "
                      "price_cents, shipping_address, status, created_at, updated_at) VALUES "
                      "('ORD-00000000', ?, 'C', 'S', 1, 0, 'addr', 'pending', ?, ?)",
                      (A, "2000-01-01T00:00:00Z", "2000-01-01T00:00:00Z"))
        pending = asyncio.ensure_future(make(repo))
        done, _ = await asyncio.wait({pending}, timeout=0.2)
        assert not done  # blocked on the lock, not failed
        await asyncio.to_thread(other.execute, "COMMIT")
        order = await asyncio.wait_for(pending, 5)
    assert await repo.count(A) == 2
    assert ids(await repo.list_orders(A))[0] == order["order_id"]
