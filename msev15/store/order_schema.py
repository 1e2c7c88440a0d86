"""The order database's schema: its migrations, and the connection settings and migration run
that :meth:`msev15.store.orders.OrderRepository.open` applies to every new connection.
"""

from __future__ import annotations

import logging
from pathlib import Path

import aiosqlite

from msev15.store.order_values import OrderError, now_iso
from msev15.store.sqlite_kit import enable_wal

log = logging.getLogger("store.orders")

BUSY_TIMEOUT_MS = 5000

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


async def configure(db: aiosqlite.Connection, path: Path) -> None:
    await db.execute_fetchall(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS:d}")
    mode = await enable_wal(db, BUSY_TIMEOUT_MS)
    if str(mode).lower() != "wal":
        log.warning("order database %s runs in journal mode %s, not WAL", path, mode)
    await db.execute_fetchall("PRAGMA foreign_keys = ON")
    await db.execute_fetchall("PRAGMA synchronous = NORMAL")


async def migrate(db: aiosqlite.Connection) -> None:
    """Apply the missing migrations in one write transaction (the caller closes on failure,
    which rolls back). BEGIN IMMEDIATE makes two processes starting together take turns."""
    await db.execute_fetchall("BEGIN IMMEDIATE")
    await db.execute_fetchall(
        "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)")
    current = int(next(iter(await db.execute_fetchall("SELECT COALESCE(MAX(version), 0) FROM schema_version")))[0])
    if current > SCHEMA_VERSION:
        raise OrderError(f"the order database has schema version {current}, newer than this program "
                         f"supports ({SCHEMA_VERSION}); upgrade the program or use another ORDER_DB_PATH")
    for version, statements in MIGRATIONS:
        if version > current:
            for statement in statements:
                await db.execute_fetchall(statement)
            await db.execute_fetchall("INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                                      (version, now_iso()))
            log.info("order database migrated to schema version %d", version)
    await db.execute_fetchall("COMMIT")
