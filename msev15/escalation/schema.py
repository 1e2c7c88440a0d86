"""The delivery-tracking tables, their indexes, and bringing older databases up to date.

Version history: the first release stored delivery records without tenants; a database from then
gains a ``tenant_id`` column (its records belong to the default tenant) and a per-tenant index.
"""

from __future__ import annotations

import logging

import aiosqlite

from msev15.tenancy import DEFAULT_TENANT

log = logging.getLogger("escalation.schema")

_CREATE_SEQUENCE = """
CREATE TABLE IF NOT EXISTS email_sequence (
    day TEXT NOT NULL,
    use_case TEXT NOT NULL,
    last INTEGER NOT NULL,
    PRIMARY KEY (day, use_case)
)
"""
# ``tenant_id`` has a default only because SQLite adds a NOT NULL column to an existing table
# only with one: records written before they had tenants belong to the default tenant. Every
# statement that writes or reads records names the tenant explicitly.
_CREATE_DELIVERIES = f"""
CREATE TABLE IF NOT EXISTS email_deliveries (
    email_id TEXT NOT NULL,
    tenant_id TEXT NOT NULL DEFAULT '{DEFAULT_TENANT}',
    role TEXT NOT NULL,
    ticket_id TEXT NOT NULL,
    use_case TEXT NOT NULL,
    recipient TEXT NOT NULL,
    backend TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL,
    provider_message_id TEXT NOT NULL DEFAULT '',
    provider_status TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    sent_at TEXT NOT NULL DEFAULT '',
    delivered_at TEXT NOT NULL DEFAULT '',
    last_error TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (email_id, role)
)
"""
_ADD_TENANT = f"ALTER TABLE email_deliveries ADD COLUMN tenant_id TEXT NOT NULL DEFAULT '{DEFAULT_TENANT}'"
_INDEXES = (
    "CREATE INDEX IF NOT EXISTS email_deliveries_ticket ON email_deliveries (ticket_id)",
    "CREATE INDEX IF NOT EXISTS email_deliveries_tenant ON email_deliveries (tenant_id, email_id)",
)


async def migrate(db: aiosqlite.Connection, where: str) -> None:
    """Create the schema, or bring a database from before tenants up to date, in one transaction.

    ``BEGIN IMMEDIATE`` takes the write lock first, so two processes opening the same old file
    migrate it once: the second sees the column the first added. ``where`` names the file in the log.
    """
    await db.execute("BEGIN IMMEDIATE")
    try:
        await db.execute(_CREATE_SEQUENCE)
        await db.execute(_CREATE_DELIVERIES)
        async with db.execute("PRAGMA table_info(email_deliveries)") as cursor:
            columns = {row[1] for row in await cursor.fetchall()}
        if "tenant_id" not in columns:
            await db.execute(_ADD_TENANT)
            log.info("escalation database %s: added tenant_id; existing delivery records belong to tenant %r",
                     where, DEFAULT_TENANT)
        for statement in _INDEXES:
            await db.execute(statement)
    except BaseException:
        await db.rollback()
        raise
    await db.commit()
