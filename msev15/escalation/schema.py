"""The delivery-tracking tables, their indexes, and bringing older databases up to date.

Version history (``PRAGMA user_version``; the first two releases did not set it, so a database
without one is recognised by its tables and columns):

1. Delivery records without tenants. Upgrading adds a ``tenant_id`` column (those records belong
   to the default tenant) and a per-tenant index.
2. Delivery records per tenant.
3. ``idempotency_keys``: the key of each ``sendemail`` call that carried one, per tenant, with the
   email id it answered for (see :mod:`msev15.escalation.replay`). Nothing else changes.
4. The support team's records have the role ``support_team`` (it was ``bank_team``).

A database with a newer version than :data:`SCHEMA_VERSION` is refused, not guessed at.
"""

from __future__ import annotations

import logging

import aiosqlite

from msev15.common.tenancy import DEFAULT_TENANT

log = logging.getLogger("escalation.schema")

SCHEMA_VERSION = 4

_CREATE_SEQUENCE = """
CREATE TABLE IF NOT EXISTS email_sequence (
    day TEXT NOT NULL,
    use_case TEXT NOT NULL,
    last INTEGER NOT NULL,
    PRIMARY KEY (day, use_case)
)
"""
# Email ids count per tenant (the shared counter above, kept for old databases, let one tenant
# read another's volume from its own ids). Created by every start, so no schema version bump.
_CREATE_TENANT_SEQUENCE = """
CREATE TABLE IF NOT EXISTS email_sequence_by_tenant (
    tenant_id TEXT NOT NULL,
    day TEXT NOT NULL,
    use_case TEXT NOT NULL,
    last INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, day, use_case)
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
# ``created_at`` is UTC text of one fixed width, so expiry is a range delete on its index.
_CREATE_KEYS = """
CREATE TABLE IF NOT EXISTS idempotency_keys (
    tenant_id TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    request_sha256 TEXT NOT NULL,
    email_id TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, idempotency_key)
)
"""
_INDEXES = (
    "CREATE INDEX IF NOT EXISTS email_deliveries_ticket ON email_deliveries (ticket_id)",
    "CREATE INDEX IF NOT EXISTS email_deliveries_tenant ON email_deliveries (tenant_id, email_id)",
    "CREATE INDEX IF NOT EXISTS idempotency_keys_created ON idempotency_keys (created_at)",
)


async def _scalar(db: aiosqlite.Connection, sql: str) -> int:
    async with db.execute(sql) as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row is not None else 0


async def migrate(db: aiosqlite.Connection, where: str) -> None:
    """Create the schema, or bring an older database up to :data:`SCHEMA_VERSION`, in one transaction.

    ``BEGIN IMMEDIATE`` takes the write lock first, so two processes opening the same old file
    migrate it once: the second sees what the first added. ``where`` names the file in the log.
    Raises RuntimeError for a database written by a newer release.
    """
    await db.execute("BEGIN IMMEDIATE")
    try:
        version = await _scalar(db, "PRAGMA user_version")
        if version > SCHEMA_VERSION:
            raise RuntimeError(f"the escalation database {where} has schema version {version}, newer than this "
                               f"program supports ({SCHEMA_VERSION}); upgrade the program or use another "
                               "ESCALATION_DB_PATH")
        existing = await _scalar(db, "SELECT count(*) FROM sqlite_master WHERE name = 'email_deliveries'")
        await db.execute(_CREATE_SEQUENCE)
        await db.execute(_CREATE_TENANT_SEQUENCE)
        await db.execute(_CREATE_DELIVERIES)
        async with db.execute("PRAGMA table_info(email_deliveries)") as cursor:
            columns = {row[1] for row in await cursor.fetchall()}
        if "tenant_id" not in columns:
            await db.execute(_ADD_TENANT)
            log.info("escalation database %s: added tenant_id; existing delivery records belong to tenant %r",
                     where, DEFAULT_TENANT)
        await db.execute(_CREATE_KEYS)
        for statement in _INDEXES:
            await db.execute(statement)
        if version < 4:
            await db.execute("UPDATE email_deliveries SET role = 'support_team' WHERE role = 'bank_team'")
        if version < SCHEMA_VERSION:
            await db.execute(f"PRAGMA user_version = {SCHEMA_VERSION:d}")
            if existing:
                log.info("escalation database %s upgraded to schema version %d", where, SCHEMA_VERSION)
    except BaseException:
        await db.rollback()
        raise
    await db.commit()
