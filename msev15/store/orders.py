"""Orders in SQLite (through aiosqlite); every row and every query is scoped to one tenant.

This module holds :class:`OrderRepository` (the queries) and the demo orders; the schema and its
migrations are in :mod:`msev15.store.order_schema`, the statuses, limits, errors, argument
validation and row conversion in :mod:`msev15.store.order_values`. Every public name of those two
that callers use is importable from here as well.

Contract and decisions:

- **Atomic writes without open transactions.** Every write after :meth:`OrderRepository.open` is
  one SQL statement (``INSERT``/``UPDATE ... RETURNING``), atomic on its own, run with a single
  aiosqlite call. No transaction is ever left open across an ``await``, so coroutines sharing the
  connection, or a call cancelled by a tool timeout, cannot leave half-done work behind. Status
  changes are compare-and-set (``... WHERE status = <the status we read>``), retried on a race.
  Only the migrations run in an explicit ``BEGIN IMMEDIATE`` transaction, inside ``open``.
- **Several writers.** WAL mode lets readers run beside the writer; other connections to the
  same file (another process) wait up to ``BUSY_TIMEOUT_MS`` for the write lock instead of
  failing with "database is locked".
- **Order ids** are ``ORD-`` + 8 random Crockford base32 characters (digits and capitals without
  I, L, O, U; about 1.1e12 values), unique across tenants, regenerated on a collision. Lookups
  accept any letter case and surrounding spaces; a malformed id is simply "not found".
- **Money** is stored as integer cents; orders carry ``price`` (unit price) and ``total``
  (price x quantity) as numbers with at most 2 decimals.
- **Timestamps** ``created_at``/``updated_at`` are ISO 8601 UTC, ``2026-02-19T10:30:00Z``.
- **Statuses** follow :data:`TRANSITIONS`. Setting the status an order already has succeeds and
  changes nothing (so a retried call is harmless).
- **Lists** are newest first. SKU and customer id match exactly but ignore letter case; the
  address search matches a literal substring (``%`` and ``_`` in it are not wildcards).
"""

from __future__ import annotations

import logging
import secrets
import sqlite3
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, NoReturn

import aiosqlite

from msev15.store.order_schema import (
    BUSY_TIMEOUT_MS,
    MIGRATIONS,
    SCHEMA_VERSION,
    configure,
    migrate,
)
from msev15.store.order_seed import DEMO_ORDERS, DEMO_TENANT
from msev15.store.order_values import (
    DEFAULT_LIMIT,
    ID_ALPHABET,
    ID_RE,
    MAX_ADDRESS,
    MAX_CUSTOMER_ID,
    MAX_LIMIT,
    MAX_NOTES,
    MAX_PRICE,
    MAX_QUANTITY,
    MAX_SKU,
    MAX_TENANT_ID,
    STATUSES,
    TRANSITIONS,
    InvalidTransition,
    Order,
    OrderError,
    OrderList,
    OrderNotFound,
    OrderStatus,
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

__all__ = [
    "BUSY_TIMEOUT_MS", "DEFAULT_LIMIT", "DEMO_TENANT", "ID_ALPHABET", "MAX_ADDRESS", "MAX_CUSTOMER_ID",
    "MAX_LIMIT", "MAX_NOTES", "MAX_PRICE", "MAX_QUANTITY", "MAX_SKU", "MAX_TENANT_ID", "MIGRATIONS",
    "SCHEMA_VERSION", "STATUSES", "TRANSITIONS", "InvalidTransition", "Order", "OrderError", "OrderList",
    "OrderNotFound", "OrderRepository", "OrderStatus", "OrderValidationError", "StoreUnavailable", "new_order_id",
]

log = logging.getLogger("store.orders")


_ID_ATTEMPTS = 8
_CAS_ATTEMPTS = 8
_COLUMNS = ("order_id, customer_id, product_sku, quantity, price_cents, shipping_address, "
            "status, notes, created_at, updated_at")
_INSERT = ("INSERT INTO orders (order_id, tenant_id, customer_id, product_sku, quantity, "
           "price_cents, shipping_address, status, notes, created_at, updated_at)")
_NEWEST_FIRST = "ORDER BY created_at DESC, seq DESC"


_REFUSALS = ("disk is full", "readonly", "read-only", "disk i/o error", "unable to open", "no space")


def _storage_refusal(exc: sqlite3.Error) -> bool:
    return any(word in str(exc).lower() for word in _REFUSALS)


def new_order_id() -> str:
    return "ORD-" + "".join(secrets.choice(ID_ALPHABET) for _ in range(8))


class OrderRepository:
    """Tenant-scoped orders over one aiosqlite connection. Create with :meth:`open`."""

    def __init__(self, db: aiosqlite.Connection, path: Path, id_factory: Callable[[], str]) -> None:
        self._db: aiosqlite.Connection | None = db
        self.path = path
        self._new_id = id_factory
        # Why the last write failed (disk full, read-only, I/O error), until a write succeeds:
        # readiness says not_ready meanwhile.
        self.write_failure: str | None = None

    @classmethod
    async def open(cls, path: str | Path, *, seed: bool = False,
                   id_factory: Callable[[], str] | None = None) -> OrderRepository:
        """Create the folder, connect, configure SQLite, migrate, and seed if asked.

        ``seed`` adds demo orders for the ``default`` tenant when it has none. ``id_factory``
        replaces the random order id generator (it must return ``ORD-XXXXXXXX`` ids).
        Raises :class:`OrderError` when the file cannot be used as the order database.
        """
        db_path = Path(path).expanduser()
        try:
            db_path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OrderError(f"cannot create the folder of the order database {db_path}: {exc}") from exc
        try:
            db = await aiosqlite.connect(db_path, isolation_level=None)
        except sqlite3.Error as exc:
            raise OrderError(f"cannot open the order database {db_path}: {exc}") from exc
        try:
            db.row_factory = sqlite3.Row
            await configure(db, db_path)
            await migrate(db)
            repo = cls(db, db_path, id_factory or new_order_id)
            if seed:
                await repo.seed_demo_orders()
        except sqlite3.DatabaseError as exc:
            await db.close()
            raise OrderError(f"cannot use {db_path} as the order database: {exc}") from exc
        except BaseException:
            await db.close()
            raise
        return repo

    async def close(self) -> None:
        """Close the connection; safe to call twice."""
        db, self._db = self._db, None
        if db is not None:
            await db.close()

    async def ping(self) -> None:
        """Raise if the database cannot answer a query (for readiness checks)."""
        await self._fetch("SELECT 1")

    # --- writes --------------------------------------------------------------------------------

    async def create(self, tenant_id: str, customer_id: str, product_sku: str, quantity: int,
                     price: float | int | Decimal | str, shipping_address: str,
                     status: str = "pending", notes: str | None = None) -> Order:
        """Insert one order and return it."""
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
                rows = await self._write(
                    f"{_INSERT} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING {_COLUMNS}",
                    (order_id, *values, now, now))
            except sqlite3.IntegrityError as exc:
                if "orders.order_id" not in str(exc):
                    raise
                log.info("order id %s already taken, drawing another", order_id)
                continue
            return order_from_row(rows[0])
        raise OrderError("could not allocate a unique order id; please try again")

    async def update_status(self, tenant_id: str, order_id: str, new_status: str) -> Order:
        """Move an order to ``new_status`` if :data:`TRANSITIONS` allows it; return the order.

        The returned order also carries ``previous_status``. Asking for the current status is
        a no-op (``updated_at`` is kept). Raises :class:`OrderNotFound`, :class:`InvalidTransition`.
        """
        tenant, oid, new = check_tenant(tenant_id), check_order_id(order_id), check_status(new_status)
        for _ in range(_CAS_ATTEMPTS):
            current = await self._get(tenant, oid)
            previous = current["status"]
            if previous == new:
                return {**current, "previous_status": previous}
            if new not in TRANSITIONS[previous]:
                raise InvalidTransition(transition_message(oid, previous, new))
            rows = await self._write(
                f"UPDATE orders SET status = ?, updated_at = ? WHERE tenant_id = ? AND order_id = ? "
                f"AND status = ? RETURNING {_COLUMNS}", (new, now_iso(), tenant, oid, previous))
            if rows:
                return {**order_from_row(rows[0]), "previous_status": previous}
            # Another writer changed the status between our read and write: decide again.
        raise OrderError(f"order {oid} is being changed by someone else right now; please try again")

    async def seed_demo_orders(self, tenant_id: str = DEMO_TENANT) -> int:
        """Add a few realistic orders for ``tenant_id`` if it has no orders; return how many.

        One ``INSERT ... SELECT ... WHERE NOT EXISTS`` statement, so two processes starting at
        once cannot both seed.
        """
        tenant = check_tenant(tenant_id)
        now = datetime.now(UTC)
        for _ in range(_ID_ATTEMPTS):
            params: list[Any] = []
            for created, updated, customer, sku, qty, price, address, status, notes in DEMO_ORDERS:
                params += [self._generated_id(), tenant, customer, sku, qty, to_cents(price), address,
                           status, notes, iso_utc(now - created), iso_utc(now - updated)]
            placeholders = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"] * len(DEMO_ORDERS))
            try:
                rows = await self._fetch(
                    f"{_INSERT} SELECT * FROM (VALUES {placeholders}) "
                    "WHERE NOT EXISTS (SELECT 1 FROM orders WHERE tenant_id = ?) RETURNING order_id",
                    (*params, tenant))
            except sqlite3.IntegrityError as exc:
                if "orders.order_id" not in str(exc):
                    raise
                continue
            if rows:
                log.info("seeded %d demo orders for tenant %r", len(rows), tenant)
            return len(rows)
        raise OrderError("could not allocate unique order ids for the demo orders")

    # --- reads ---------------------------------------------------------------------------------

    async def get(self, tenant_id: str, order_id: str) -> Order:
        """The order with that id, or :class:`OrderNotFound`."""
        return await self._get(check_tenant(tenant_id), check_order_id(order_id))

    async def by_customer(self, tenant_id: str, customer_id: str, limit: int = DEFAULT_LIMIT) -> OrderList:
        """A customer's orders, newest first."""
        rows = await self._fetch(
            f"SELECT {_COLUMNS} FROM orders WHERE tenant_id = ? AND customer_id = ? {_NEWEST_FIRST} LIMIT ?",
            (check_tenant(tenant_id), check_text("customer_id", customer_id, MAX_CUSTOMER_ID),
             check_limit(limit)))
        return [order_from_row(row) for row in rows]

    async def search(self, tenant_id: str, *, sku: str | None = None, address: str | None = None,
                     status: str | None = None, limit: int = DEFAULT_LIMIT) -> OrderList:
        """Orders matching every given criterion (at least one), newest first."""
        clauses, params = ["tenant_id = ?"], [check_tenant(tenant_id)]
        if sku is not None:
            clauses.append("product_sku = ?")
            params.append(check_text("sku", sku, MAX_SKU))
        if address is not None:
            clauses.append("shipping_address LIKE ? ESCAPE '\\'")
            params.append(f"%{escape_like(check_text('address', address, MAX_ADDRESS, newlines=True))}%")
        if status is not None:
            clauses.append("status = ?")
            params.append(check_status(status))
        if len(clauses) == 1:
            raise OrderValidationError("give at least one search criterion: sku, address or status")
        rows = await self._fetch(
            f"SELECT {_COLUMNS} FROM orders WHERE {' AND '.join(clauses)} {_NEWEST_FIRST} LIMIT ?",
            (*params, check_limit(limit)))
        return [order_from_row(row) for row in rows]

    async def list_orders(self, tenant_id: str, limit: int = DEFAULT_LIMIT) -> OrderList:
        """The tenant's most recent orders, newest first."""
        rows = await self._fetch(f"SELECT {_COLUMNS} FROM orders WHERE tenant_id = ? {_NEWEST_FIRST} LIMIT ?",
                                 (check_tenant(tenant_id), check_limit(limit)))
        return [order_from_row(row) for row in rows]

    async def count(self, tenant_id: str) -> int:
        rows = await self._fetch("SELECT COUNT(*) FROM orders WHERE tenant_id = ?", (check_tenant(tenant_id),))
        return int(rows[0][0])

    # --- internals -----------------------------------------------------------------------------

    async def _get(self, tenant: str, oid: str) -> Order:
        rows = await self._fetch(f"SELECT {_COLUMNS} FROM orders WHERE tenant_id = ? AND order_id = ?",
                                 (tenant, oid))
        if not rows:
            raise OrderNotFound(f"no order {oid} found")
        return order_from_row(rows[0])

    async def _write(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """A statement that changes the database; a refusal of the storage becomes StoreUnavailable."""
        try:
            rows = await self._fetch(sql, params)
        except sqlite3.IntegrityError:
            raise
        except sqlite3.OperationalError as exc:
            if not _storage_refusal(exc):
                raise
            self._write_failed(exc)
        self.write_failure = None
        return rows

    def _write_failed(self, exc: sqlite3.Error) -> NoReturn:
        if self.write_failure is None:
            log.error("The order database refused a write: %s", exc)
        self.write_failure = str(exc)
        raise StoreUnavailable("the order store cannot save changes right now (the database refused the write); "
                               "please try again later") from exc

    async def probe_write(self) -> bool:
        """Try a write that needs new pages and a commit, then leaves nothing behind; True when
        it succeeds. Readiness calls this while a write failure is on record, so the store is
        seen to recover without waiting for a client's write."""
        assert self._db is not None
        db = self._db
        try:
            await db.execute("BEGIN IMMEDIATE")
            await db.execute("CREATE TABLE IF NOT EXISTS store_probe (filler BLOB)")
            await db.execute("INSERT INTO store_probe VALUES (zeroblob(8192))")
            await db.execute("DELETE FROM store_probe")
            await db.execute("COMMIT")
        except sqlite3.Error as exc:
            if db.in_transaction:
                await db.execute("ROLLBACK")
            self.write_failure = str(exc)
            return False
        self.write_failure = None
        return True

    async def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        # execute + fetchall in one call on aiosqlite's thread: the statement (and its implicit
        # transaction) is finished before control returns to the event loop.
        if self._db is None:
            raise OrderError("the order database is closed")
        return list(await self._db.execute_fetchall(sql, params))

    def _generated_id(self) -> str:
        order_id = self._new_id()
        if not ID_RE.fullmatch(order_id):
            raise ValueError(f"id factory returned {order_id!r}, expected ORD- and 8 of {ID_ALPHABET}")
        return order_id
