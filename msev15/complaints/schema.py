"""The complaints table, its indexes, and bringing older databases up to date.

Version history: the first release stored complaints without tenants; a database from then gains
a ``tenant_id`` column (its rows belong to the default tenant) and per-tenant indexes. The
``idempotency_keys`` table (see :mod:`msev15.complaints.replay`) came later; older databases gain
it empty.
"""

from __future__ import annotations

import logging
import sqlite3

from .models import DEFAULT_TENANT

log = logging.getLogger("complaints.schema")

# ``tenant_id`` has a default only because SQLite adds a NOT NULL column to an existing table
# only with one: rows written before complaints had tenants belong to the default tenant. Every
# statement below names the tenant explicitly.
_CREATE_TABLE = f"""
CREATE TABLE IF NOT EXISTS complaints (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL DEFAULT '{DEFAULT_TENANT}',
    customer_id TEXT NOT NULL,
    order_id TEXT,
    category TEXT NOT NULL,
    description TEXT NOT NULL,
    priority TEXT NOT NULL,
    status TEXT NOT NULL,
    resolution TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    resolved_at TEXT,
    archived_at TEXT
)
"""
# One row per change made with an idempotency key; ``request`` is the digest of what was asked.
_CREATE_KEYS = """
CREATE TABLE IF NOT EXISTS idempotency_keys (
    tenant_id TEXT NOT NULL,
    key TEXT NOT NULL,
    request TEXT NOT NULL,
    complaint_id TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, key)
) WITHOUT ROWID
"""
_ADD_TENANT = f"ALTER TABLE complaints ADD COLUMN tenant_id TEXT NOT NULL DEFAULT '{DEFAULT_TENANT}'"
# Every lookup is per tenant, so every index leads with it; the tenant-less indexes of the first
# schema are dropped.
_INDEXES = (
    "DROP INDEX IF EXISTS complaints_customer",
    "DROP INDEX IF EXISTS complaints_order",
    "DROP INDEX IF EXISTS complaints_status",
    "CREATE INDEX IF NOT EXISTS complaints_tenant ON complaints (tenant_id, created_at)",
    "CREATE INDEX IF NOT EXISTS complaints_tenant_customer ON complaints (tenant_id, customer_id, created_at)",
    "CREATE INDEX IF NOT EXISTS complaints_tenant_order ON complaints (tenant_id, order_id)",
    "CREATE INDEX IF NOT EXISTS complaints_tenant_status ON complaints (tenant_id, status, created_at)",
    "CREATE INDEX IF NOT EXISTS idempotency_keys_created ON idempotency_keys (created_at)",
)


def migrate(conn: sqlite3.Connection, where: str) -> None:
    """Create the schema, or bring an older database up to date.

    Call it inside ``BEGIN IMMEDIATE``: two processes opening the same old file then migrate it
    once, the second seeing the column the first added. ``where`` names the file in the log.
    """
    conn.execute(_CREATE_TABLE)
    conn.execute(_CREATE_KEYS)
    columns = {row[1] for row in conn.execute("PRAGMA table_info(complaints)")}
    if "tenant_id" not in columns:
        conn.execute(_ADD_TENANT)
        log.info("complaints database %s: added tenant_id; existing complaints belong to tenant %r",
                 where, DEFAULT_TENANT)
    for statement in _INDEXES:
        conn.execute(statement)
