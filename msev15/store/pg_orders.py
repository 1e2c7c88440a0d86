"""Orders in PostgreSQL (DATABASE_URL): the SQLite repository's contract (see
:mod:`msev15.store.orders`) on migration 7 of :mod:`msev15.store.pg_schema`, shared by every
instance, so an order created through one replica is seen through every other.

Every write is one statement (``INSERT``/``UPDATE ... RETURNING``), atomic on its own; status
changes are compare-and-set, retried on a race, as in SQLite. SKU and customer id match ignoring
case (``lower()``, indexed), the address search is a literal, case-insensitive substring
(``ILIKE`` with ``%``/``_`` escaped), as SQLite's LIKE is. PostgreSQL unreachable: reads and
writes raise the order store's :class:`~msev15.store.order_values.StoreUnavailable` (the tools
answer 503 ``store_unavailable``) and readiness reports it until a probe succeeds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg

from msev15.store.base import StoreUnavailable as Unreachable
from msev15.store.order_seed import DEMO_ORDERS, DEMO_TENANT
from msev15.store.order_values import (
    DEFAULT_LIMIT,
    ID_ALPHABET,
    ID_RE,
    MAX_ADDRESS,
    MAX_CUSTOMER_ID,
    MAX_SKU,
    TRANSITIONS,
    InvalidTransition,
    Order,
    OrderError,
    OrderList,
    OrderNotFound,
    OrderValidationError,
    StoreUnavailable,
    check_limit,
    check_notes,
    check_order_id,
    check_quantity,
    check_status,
    check_tenant,
    check_text,
    escape_like,
    iso_utc,
    now_iso,
    order_from_row,
    to_cents,
    transition_message,
)
from msev15.store.orders import new_order_id
from msev15.store.pg_kit import Database, is_unavailable

log = logging.getLogger("store.orders")

_ID_ATTEMPTS = 8
_CAS_ATTEMPTS = 8
_COLUMNS = ("order_id, customer_id, product_sku, quantity, price_cents, shipping_address, "
            "status, notes, created_at, updated_at")
_INSERT = ("INSERT INTO orders (order_id, tenant_id, customer_id, product_sku, quantity, "
           "price_cents, shipping_address, status, notes, created_at, updated_at)")
_NEWEST_FIRST = "ORDER BY created_at DESC, seq DESC"
# An order by its id, in its tenant. The tenant test is written ``(tenant_id = $n) IS TRUE`` (the
# same for a NOT NULL column), which no index matches: written ``tenant_id = $n``, the generic plan
# PostgreSQL caches for a prepared statement (asyncpg prepares each one), planned while the table
# is small, took an index on (tenant_id, ...) over the unique order_id, and every look-up then
# walked all of the tenant's orders until an ANALYZE replaced the plan.
_GET = f"SELECT {_COLUMNS} FROM orders WHERE order_id = $2 AND (tenant_id = $1) IS TRUE"
_SET_STATUS = (f"UPDATE orders SET status = $1, updated_at = $2 WHERE order_id = $4 AND (tenant_id = $3) IS TRUE "
               f"AND status = $5 RETURNING {_COLUMNS}")
# The column types of _INSERT, for the VALUES list of the seed (its parameters carry no type).
_SEED_TYPES = ("text", "text", "text", "text", "int", "bigint", "text", "text", "text", "text", "text")


class PostgresOrders:
    def __init__(self, db: Database, id_factory: Callable[[], str] | None = None) -> None:
        self.db = db
        self._new_id = id_factory or new_order_id
        self.write_failure: str | None = None

    async def close(self) -> None:
        """The pool is the topology's: it closes it."""

    async def ping(self) -> None:
        await self._fetch("SELECT 1")

    # --- writes --------------------------------------------------------------------------------

    async def create(self, tenant_id: str, customer_id: str, product_sku: str, quantity: int,
                     price: float | int | Decimal | str, shipping_address: str,
                     status: str = "pending", notes: str | None = None) -> Order:
        values = (
            check_tenant(tenant_id),
            check_text("customer_id", customer_id, MAX_CUSTOMER_ID),
            check_text("product_sku", product_sku, MAX_SKU),
            check_quantity(quantity),
            to_cents(price),
            check_text("shipping_address", shipping_address, MAX_ADDRESS, newlines=True),
            check_status(status),
            check_notes(notes),
        )
        now = now_iso()
        for _ in range(_ID_ATTEMPTS):
            order_id = self._generated_id()
            try:
                rows = await self._fetch(f"{_INSERT} VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) "
                                         f"RETURNING {_COLUMNS}", (order_id, *values, now, now), write=True)
            except asyncpg.UniqueViolationError:
                log.info("order id %s already taken, drawing another", order_id)
                continue
            return order_from_row(rows[0])
        raise OrderError("could not allocate a unique order id; please try again")

    async def update_status(self, tenant_id: str, order_id: str, new_status: str) -> Order:
        tenant, oid, new = check_tenant(tenant_id), check_order_id(order_id), check_status(new_status)
        for _ in range(_CAS_ATTEMPTS):
            current = await self._get(tenant, oid)
            previous = current["status"]
            if previous == new:
                return {**current, "previous_status": previous}
            if new not in TRANSITIONS[previous]:
                raise InvalidTransition(transition_message(oid, previous, new))
            rows = await self._fetch(_SET_STATUS, (new, now_iso(), tenant, oid, previous), write=True)
            if rows:
                return {**order_from_row(rows[0]), "previous_status": previous}
        raise OrderError(f"order {oid} is being changed by someone else right now; please try again")

    async def seed_demo_orders(self, tenant_id: str = DEMO_TENANT) -> int:
        """Inserts only while the tenant has no orders, under the tenant's seeding lock: without
        it two instances starting at once would both see no orders (PostgreSQL does not lock the
        absence of rows) and both seed."""
        tenant = check_tenant(tenant_id)
        now = datetime.now(UTC)
        for _ in range(_ID_ATTEMPTS):
            params: list[Any] = []
            rows_sql = []
            for created, updated, customer, sku, qty, price, address, status, notes in DEMO_ORDERS:
                base = len(params)
                rows_sql.append("(" + ", ".join(f"${base + i}::{kind}" for i, kind in enumerate(_SEED_TYPES, 1)) + ")")
                params += [self._generated_id(), tenant, customer, sku, qty, to_cents(price), address,
                           status, notes, iso_utc(now - created), iso_utc(now - updated)]
            params.append(tenant)
            try:
                rows = await self._seed(
                    f"{_INSERT} SELECT * FROM (VALUES {', '.join(rows_sql)}) AS v "
                    f"WHERE NOT EXISTS (SELECT 1 FROM orders WHERE tenant_id = ${len(params)}) RETURNING order_id",
                    params, tenant)
            except asyncpg.UniqueViolationError:
                continue
            if rows:
                log.info("seeded %d demo orders for tenant %r", len(rows), tenant)
            return len(rows)
        raise OrderError("could not allocate unique order ids for the demo orders")

    # --- reads ---------------------------------------------------------------------------------

    async def get(self, tenant_id: str, order_id: str) -> Order:
        return await self._get(check_tenant(tenant_id), check_order_id(order_id))

    async def by_customer(self, tenant_id: str, customer_id: str, limit: int = DEFAULT_LIMIT) -> OrderList:
        rows = await self._fetch(
            f"SELECT {_COLUMNS} FROM orders WHERE tenant_id = $1 AND lower(customer_id) = lower($2) "
            f"{_NEWEST_FIRST} LIMIT $3",
            (check_tenant(tenant_id), check_text("customer_id", customer_id, MAX_CUSTOMER_ID), check_limit(limit)))
        return [order_from_row(row) for row in rows]

    async def search(self, tenant_id: str, *, sku: str | None = None, address: str | None = None,
                     status: str | None = None, limit: int = DEFAULT_LIMIT) -> OrderList:
        clauses, params = ["tenant_id = $1"], [check_tenant(tenant_id)]
        args: list[object] = []
        if sku is not None:
            params.append(check_text("sku", sku, MAX_SKU))
            clauses.append(f"lower(product_sku) = lower(${len(params)})")
        if address is not None:
            params.append(f"%{escape_like(check_text('address', address, MAX_ADDRESS, newlines=True))}%")
            clauses.append(f"shipping_address ILIKE ${len(params)} ESCAPE '\\'")
        if status is not None:
            params.append(check_status(status))
            clauses.append(f"status = ${len(params)}")
        if len(clauses) == 1:
            raise OrderValidationError("give at least one search criterion: sku, address or status")
        args = [*params, check_limit(limit)]
        rows = await self._fetch(f"SELECT {_COLUMNS} FROM orders WHERE {' AND '.join(clauses)} {_NEWEST_FIRST} "
                                 f"LIMIT ${len(args)}", args)
        return [order_from_row(row) for row in rows]

    async def list_orders(self, tenant_id: str, limit: int = DEFAULT_LIMIT) -> OrderList:
        rows = await self._fetch(f"SELECT {_COLUMNS} FROM orders WHERE tenant_id = $1 {_NEWEST_FIRST} LIMIT $2",
                                 (check_tenant(tenant_id), check_limit(limit)))
        return [order_from_row(row) for row in rows]

    async def count(self, tenant_id: str) -> int:
        rows = await self._fetch("SELECT COUNT(*) FROM orders WHERE tenant_id = $1", (check_tenant(tenant_id),))
        return int(rows[0][0])

    async def probe_write(self) -> bool:
        """Readiness, while a write failure is on record: can PostgreSQL be reached again?"""
        if await self.db.status() != "healthy":
            return False
        self.write_failure = None
        return True

    # --- internals -----------------------------------------------------------------------------

    async def _seed(self, sql: str, params: Sequence[Any], tenant: str) -> list[Any]:
        try:
            async with self.db.transaction() as conn:
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext('orders-seed'), hashtext($1))", tenant)
                return list(await conn.fetch(sql, *params))
        except Unreachable as exc:
            self._failed(exc, True)
        raise AssertionError("unreachable")

    async def _get(self, tenant: str, oid: str) -> Order:
        rows = await self._fetch(_GET, (tenant, oid))
        if not rows:
            raise OrderNotFound(f"no order {oid} found")
        return order_from_row(rows[0])

    async def _fetch(self, sql: str, params: Sequence[Any] = (), *, write: bool = False) -> list[Any]:
        try:
            async with self.db.connection() as conn:
                rows = list(await conn.fetch(sql, *params))
        except Unreachable as exc:
            self._failed(exc, write)
        except asyncpg.PostgresError as exc:
            if not is_unavailable(exc):
                raise
            self._failed(exc, write)
        if write:
            self.write_failure = None
        return rows

    def _failed(self, exc: BaseException, write: bool) -> None:
        if write:
            if self.write_failure is None:
                log.error("The order database refused a write: %s", exc)
            self.write_failure = str(exc)
        raise StoreUnavailable("the order store cannot be reached right now; please try again later") from exc

    def _generated_id(self) -> str:
        order_id = self._new_id()
        if not ID_RE.fullmatch(order_id):
            raise ValueError(f"id factory returned {order_id!r}, expected ORD- and 8 of {ID_ALPHABET}")
        return order_id
