"""Orders in SQLite (through aiosqlite); every row and every query is scoped to one tenant.

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
import re
import secrets
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path
from types import MappingProxyType
from typing import Any

import aiosqlite

log = logging.getLogger("store.orders")

STATUSES: tuple[str, ...] = ("pending", "confirmed", "shipped", "delivered", "cancelled")
TRANSITIONS: Mapping[str, frozenset[str]] = MappingProxyType({
    "pending": frozenset({"confirmed", "cancelled"}),
    "confirmed": frozenset({"shipped", "cancelled"}),
    "shipped": frozenset({"delivered"}),
    "delivered": frozenset(),
    "cancelled": frozenset(),
})
DEFAULT_LIMIT = 50
MAX_LIMIT = 500
MAX_QUANTITY = 10_000
MAX_PRICE = Decimal("1000000")
MAX_CUSTOMER_ID, MAX_SKU, MAX_ADDRESS, MAX_NOTES, MAX_TENANT_ID = 100, 64, 500, 2000, 128
BUSY_TIMEOUT_MS = 5000
DEMO_TENANT = "default"
ID_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32

_ID_RE = re.compile(r"ORD-[0-9A-Z]{8}")
_ID_ATTEMPTS = 8
_CAS_ATTEMPTS = 8
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_EXCEPT_NEWLINES = re.compile(r"[\x00-\x09\x0b\x0c\x0e-\x1f\x7f]")
_COLUMNS = ("order_id, customer_id, product_sku, quantity, price_cents, shipping_address, "
            "status, notes, created_at, updated_at")
_INSERT = ("INSERT INTO orders (order_id, tenant_id, customer_id, product_sku, quantity, "
           "price_cents, shipping_address, status, notes, created_at, updated_at)")
_NEWEST_FIRST = "ORDER BY created_at DESC, seq DESC"

# (version, statements). Append new versions; never edit an applied one. `seq` keeps insertion
# order as a tie-break for equal timestamps; NOCASE columns let the indexes serve
# case-insensitive SKU and customer matches.
MIGRATIONS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (1, (
        """CREATE TABLE orders (
            seq INTEGER PRIMARY KEY,
            order_id TEXT NOT NULL UNIQUE,
            tenant_id TEXT NOT NULL,
            customer_id TEXT NOT NULL COLLATE NOCASE,
            product_sku TEXT NOT NULL COLLATE NOCASE,
            quantity INTEGER NOT NULL CHECK (quantity > 0),
            price_cents INTEGER NOT NULL CHECK (price_cents >= 0),
            shipping_address TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN
                ('pending', 'confirmed', 'shipped', 'delivered', 'cancelled')),
            notes TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )""",
        "CREATE INDEX idx_orders_customer ON orders (tenant_id, customer_id, created_at)",
        "CREATE INDEX idx_orders_sku ON orders (tenant_id, product_sku)",
        "CREATE INDEX idx_orders_status ON orders (tenant_id, status)",
        "CREATE INDEX idx_orders_created ON orders (tenant_id, created_at)",
    )),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]

Order = dict[str, Any]
OrderList = list[Order]


class OrderError(Exception):
    """Base of the order errors; ``str(error)`` is a message a caller (or a model) can act on."""


class OrderValidationError(OrderError, ValueError):
    """An argument is missing, malformed or out of range."""


class OrderNotFound(OrderError, LookupError):
    """No order with that id exists for this tenant (another tenant's order is not found either)."""


class InvalidTransition(OrderError):
    """The order's current status does not allow the requested one."""


def new_order_id() -> str:
    return "ORD-" + "".join(secrets.choice(ID_ALPHABET) for _ in range(8))


class OrderRepository:
    """Tenant-scoped orders over one aiosqlite connection. Create with :meth:`open`."""

    def __init__(self, db: aiosqlite.Connection, path: Path, id_factory: Callable[[], str]) -> None:
        self._db: aiosqlite.Connection | None = db
        self.path = path
        self._new_id = id_factory

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
            await _configure(db, db_path)
            await _migrate(db)
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
            _tenant(tenant_id),
            _text("customer_id", customer_id, MAX_CUSTOMER_ID),
            _text("product_sku", product_sku, MAX_SKU),
            _quantity(quantity),
            _cents(price),
            _text("shipping_address", shipping_address, MAX_ADDRESS, newlines=True),
            _status(status),
            _notes(notes),
        )
        now = _now()
        for _ in range(_ID_ATTEMPTS):
            order_id = self._generated_id()
            try:
                rows = await self._fetch(
                    f"{_INSERT} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING {_COLUMNS}",
                    (order_id, *values, now, now))
            except sqlite3.IntegrityError as exc:
                if "orders.order_id" not in str(exc):
                    raise
                log.info("order id %s already taken, drawing another", order_id)
                continue
            return _order(rows[0])
        raise OrderError("could not allocate a unique order id; please try again")

    async def update_status(self, tenant_id: str, order_id: str, new_status: str) -> Order:
        """Move an order to ``new_status`` if :data:`TRANSITIONS` allows it; return the order.

        The returned order also carries ``previous_status``. Asking for the current status is
        a no-op (``updated_at`` is kept). Raises :class:`OrderNotFound`, :class:`InvalidTransition`.
        """
        tenant, oid, new = _tenant(tenant_id), _order_id(order_id), _status(new_status)
        for _ in range(_CAS_ATTEMPTS):
            current = await self._get(tenant, oid)
            previous = current["status"]
            if previous == new:
                return {**current, "previous_status": previous}
            if new not in TRANSITIONS[previous]:
                raise InvalidTransition(_transition_message(oid, previous, new))
            rows = await self._fetch(
                f"UPDATE orders SET status = ?, updated_at = ? WHERE tenant_id = ? AND order_id = ? "
                f"AND status = ? RETURNING {_COLUMNS}", (new, _now(), tenant, oid, previous))
            if rows:
                return {**_order(rows[0]), "previous_status": previous}
            # Another writer changed the status between our read and write: decide again.
        raise OrderError(f"order {oid} is being changed by someone else right now; please try again")

    async def seed_demo_orders(self, tenant_id: str = DEMO_TENANT) -> int:
        """Add a few realistic orders for ``tenant_id`` if it has no orders; return how many.

        One ``INSERT ... SELECT ... WHERE NOT EXISTS`` statement, so two processes starting at
        once cannot both seed.
        """
        tenant = _tenant(tenant_id)
        now = datetime.now(timezone.utc)
        for _ in range(_ID_ATTEMPTS):
            params: list[Any] = []
            for created, updated, customer, sku, qty, price, address, status, notes in _DEMO_ORDERS:
                params += [self._generated_id(), tenant, customer, sku, qty, _cents(price), address,
                           status, notes, _iso(now - created), _iso(now - updated)]
            placeholders = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"] * len(_DEMO_ORDERS))
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
        return await self._get(_tenant(tenant_id), _order_id(order_id))

    async def by_customer(self, tenant_id: str, customer_id: str, limit: int = DEFAULT_LIMIT) -> OrderList:
        """A customer's orders, newest first."""
        rows = await self._fetch(
            f"SELECT {_COLUMNS} FROM orders WHERE tenant_id = ? AND customer_id = ? {_NEWEST_FIRST} LIMIT ?",
            (_tenant(tenant_id), _text("customer_id", customer_id, MAX_CUSTOMER_ID), _limit(limit)))
        return [_order(row) for row in rows]

    async def search(self, tenant_id: str, *, sku: str | None = None, address: str | None = None,
                     status: str | None = None, limit: int = DEFAULT_LIMIT) -> OrderList:
        """Orders matching every given criterion (at least one), newest first."""
        clauses, params = ["tenant_id = ?"], [_tenant(tenant_id)]
        if sku is not None:
            clauses.append("product_sku = ?")
            params.append(_text("sku", sku, MAX_SKU))
        if address is not None:
            clauses.append("shipping_address LIKE ? ESCAPE '\\'")
            params.append(f"%{_escape_like(_text('address', address, MAX_ADDRESS, newlines=True))}%")
        if status is not None:
            clauses.append("status = ?")
            params.append(_status(status))
        if len(clauses) == 1:
            raise OrderValidationError("give at least one search criterion: sku, address or status")
        rows = await self._fetch(
            f"SELECT {_COLUMNS} FROM orders WHERE {' AND '.join(clauses)} {_NEWEST_FIRST} LIMIT ?",
            (*params, _limit(limit)))
        return [_order(row) for row in rows]

    async def list(self, tenant_id: str, limit: int = DEFAULT_LIMIT) -> OrderList:
        """The tenant's most recent orders, newest first."""
        rows = await self._fetch(f"SELECT {_COLUMNS} FROM orders WHERE tenant_id = ? {_NEWEST_FIRST} LIMIT ?",
                                 (_tenant(tenant_id), _limit(limit)))
        return [_order(row) for row in rows]

    async def count(self, tenant_id: str) -> int:
        rows = await self._fetch("SELECT COUNT(*) FROM orders WHERE tenant_id = ?", (_tenant(tenant_id),))
        return int(rows[0][0])

    # --- internals -----------------------------------------------------------------------------

    async def _get(self, tenant: str, oid: str) -> Order:
        rows = await self._fetch(f"SELECT {_COLUMNS} FROM orders WHERE tenant_id = ? AND order_id = ?",
                                 (tenant, oid))
        if not rows:
            raise OrderNotFound(f"no order {oid} found")
        return _order(rows[0])

    async def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        # execute + fetchall in one call on aiosqlite's thread: the statement (and its implicit
        # transaction) is finished before control returns to the event loop.
        if self._db is None:
            raise OrderError("the order database is closed")
        return list(await self._db.execute_fetchall(sql, params))

    def _generated_id(self) -> str:
        order_id = self._new_id()
        if not _ID_RE.fullmatch(order_id):
            raise ValueError(f"id factory returned {order_id!r}, expected ORD- and 8 of {ID_ALPHABET}")
        return order_id


async def _configure(db: aiosqlite.Connection, path: Path) -> None:
    mode = (await db.execute_fetchall("PRAGMA journal_mode = WAL"))[0][0]
    if str(mode).lower() != "wal":
        log.warning("order database %s runs in journal mode %s, not WAL", path, mode)
    await db.execute_fetchall(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS:d}")
    await db.execute_fetchall("PRAGMA foreign_keys = ON")
    await db.execute_fetchall("PRAGMA synchronous = NORMAL")


async def _migrate(db: aiosqlite.Connection) -> None:
    """Apply the missing migrations in one write transaction (the caller closes on failure,
    which rolls back). BEGIN IMMEDIATE makes two processes starting together take turns."""
    await db.execute_fetchall("BEGIN IMMEDIATE")
    await db.execute_fetchall(
        "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)")
    current = int((await db.execute_fetchall("SELECT COALESCE(MAX(version), 0) FROM schema_version"))[0][0])
    if current > SCHEMA_VERSION:
        raise OrderError(f"the order database has schema version {current}, newer than this program "
                         f"supports ({SCHEMA_VERSION}); upgrade the program or use another ORDER_DB_PATH")
    for version, statements in MIGRATIONS:
        if version > current:
            for statement in statements:
                await db.execute_fetchall(statement)
            await db.execute_fetchall("INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                                      (version, _now()))
            log.info("order database migrated to schema version %d", version)
    await db.execute_fetchall("COMMIT")


# --- validation and conversion -------------------------------------------------------------------


def _tenant(value: object) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_TENANT_ID:
        raise OrderValidationError(f"tenant_id must be non-empty text of at most {MAX_TENANT_ID} characters")
    return value.strip()


def _text(name: str, value: object, max_len: int, *, newlines: bool = False) -> str:
    if not isinstance(value, str):
        raise OrderValidationError(f"{name} must be text, got {type(value).__name__}")
    text = value.strip()
    if not text:
        raise OrderValidationError(f"{name} must not be empty")
    if len(text) > max_len:
        raise OrderValidationError(f"{name} must be at most {max_len} characters, got {len(text)}")
    if (_CONTROL_EXCEPT_NEWLINES if newlines else _CONTROL).search(text):
        raise OrderValidationError(f"{name} must not contain control characters")
    return text


def _notes(value: object) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return _text("notes", value, MAX_NOTES, newlines=True)


def _quantity(value: object) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_QUANTITY:
        raise OrderValidationError(f"quantity must be a whole number from 1 to {MAX_QUANTITY}, got {value!r}")
    return value


def _cents(value: object) -> int:
    """Price to integer cents, exactly: 19.99 is 1999 cents, never 1998.9999."""
    amount: Decimal | None = None
    if isinstance(value, Decimal):
        amount = value
    elif isinstance(value, (int, float, str)) and not isinstance(value, bool):
        try:
            amount = Decimal(str(value).strip())  # str() of a float is its shortest repr
        except InvalidOperation:
            amount = None
    if amount is None or not amount.is_finite() or not 0 <= amount <= MAX_PRICE:
        raise OrderValidationError(f"price must be a number from 0 to {MAX_PRICE}, got {value!r}")
    cents = amount * 100
    if cents != cents.to_integral_value():
        raise OrderValidationError(f"price must have at most 2 decimal places (whole cents), got {value!r}")
    return int(cents)


def _status(value: object) -> str:
    status = value.strip().lower() if isinstance(value, str) else None
    if status not in TRANSITIONS:
        raise OrderValidationError(f"unknown status {value!r}; use one of: {', '.join(STATUSES)}")
    return status


def _limit(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_LIMIT:
        raise OrderValidationError(f"limit must be a whole number from 1 to {MAX_LIMIT}, got {value!r}")
    return value


def _order_id(value: object) -> str:
    oid = value.strip().upper() if isinstance(value, str) else ""
    if not _ID_RE.fullmatch(oid):
        raise OrderNotFound(f"no order {value!r} found; order ids look like ORD-7K3M9Q2X")
    return oid


def _transition_message(oid: str, previous: str, new: str) -> str:
    allowed = [s for s in STATUSES if s in TRANSITIONS[previous]]
    hint = f"allowed next: {', '.join(allowed)}" if allowed else f"{previous} is a final status"
    return f"order {oid} is {previous} and cannot become {new}; {hint}"


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _now() -> str:
    return _iso(datetime.now(timezone.utc))


def _money(cents: int) -> float:
    return round(cents / 100, 2)


def _order(row: sqlite3.Row) -> Order:
    return {
        "order_id": row["order_id"],
        "customer_id": row["customer_id"],
        "product_sku": row["product_sku"],
        "quantity": row["quantity"],
        "price": _money(row["price_cents"]),
        "total": _money(row["price_cents"] * row["quantity"]),
        "shipping_address": row["shipping_address"],
        "status": row["status"],
        "notes": row["notes"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


_DAY = timedelta(days=1)
# (age at creation, age at last update, customer, sku, quantity, price, address, status, notes)
_DEMO_ORDERS: tuple[tuple[timedelta, timedelta, str, str, int, str, str, str, str | None], ...] = (
    (14 * _DAY, 9 * _DAY, "CUST-1001", "LAPTOP-PRO-14", 1, "1299.00",
     "12 Harbour Road, Bristol BS1 5TY, United Kingdom", "delivered", "Gift wrap requested"),
    (5 * _DAY, 2 * _DAY, "CUST-1001", "USB-C-HUB-7IN1", 2, "49.99",
     "12 Harbour Road, Bristol BS1 5TY, United Kingdom", "shipped", None),
    (3 * _DAY, 2 * _DAY, "CUST-1002", "HEADPHONES-NC700", 1, "279.50",
     "450 Market Street, Apt 8, San Francisco, CA 94105, USA", "confirmed", None),
    (2 * _DAY, 1 * _DAY, "CUST-1002", "PHONE-CASE-M", 1, "19.99",
     "450 Market Street, Apt 8, San Francisco, CA 94105, USA", "cancelled", "Customer changed their mind"),
    (_DAY / 8, _DAY / 8, "CUST-1003", "COFFEE-BEANS-1KG", 3, "24.90",
     "Hauptstrasse 5, 10115 Berlin, Germany", "pending", "Leave with the neighbour if nobody is home"),
)
