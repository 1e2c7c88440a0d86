"""The SQLite session database's schema, its migrations, and the connection settings that
:meth:`msev15.store.sqlite_sessions.SqliteSessions.open` applies.

The schema version is ``PRAGMA user_version``; migrations run in one ``BEGIN IMMEDIATE``
transaction, so two processes opening a new file take turns, and a database written by a newer
release is refused instead of being misread.
"""

from __future__ import annotations

import logging
from pathlib import Path

import aiosqlite

from msev15.store.sqlite_kit import enable_wal

log = logging.getLogger("store.sessions")

BUSY_TIMEOUT_MS = 5000

# (version, statements). Append new versions; never edit an applied one.
#
# sessions: one row per conversation. ``touched`` is the commit order (from meta 'touched'), the
# tie-break between equal timestamps so "most recently active" is exact, as in the memory store.
# ``first_seq``..``next_seq`` is the range of message numbers the session holds: trimming drops a
# prefix, so positions are plain arithmetic. meta holds counters kept in step with the tables
# ('sessions': rows in sessions, so the global cap needs no COUNT(*); 'touched').
# messages: clustered by (tenant, session_id, seq), so a session's messages are one range read.
MIGRATIONS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (1, (
        """CREATE TABLE sessions (
            tenant TEXT NOT NULL,
            session_id TEXT NOT NULL,
            created_at REAL NOT NULL,
            last_activity REAL NOT NULL,
            touched INTEGER NOT NULL,
            visible_count INTEGER NOT NULL,
            first_seq INTEGER NOT NULL,
            next_seq INTEGER NOT NULL,
            PRIMARY KEY (tenant, session_id)
        )""",
        "CREATE INDEX sessions_by_tenant_activity ON sessions (tenant, last_activity, touched)",
        "CREATE INDEX sessions_by_activity ON sessions (last_activity, touched)",
        """CREATE TABLE messages (
            tenant TEXT NOT NULL,
            session_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            role TEXT NOT NULL,
            content TEXT,
            ts REAL NOT NULL,
            extra TEXT,
            PRIMARY KEY (tenant, session_id, seq)
        ) WITHOUT ROWID""",
        "CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID",
        "INSERT INTO meta (name, value) VALUES ('sessions', 0), ('touched', 0)",
    )),
    # Version 2: per-tenant session counts and bytes per message and per session, so the session
    # caps and SESSION_MAX_BYTES cost no scan. tenants: sessions per tenant (rows with 0 are
    # deleted) and ``changed``, the meta 'touched' value when the count last moved: among tenants
    # holding equally many, the one whose count moved first loses a session first, as in the
    # memory store. ``bytes`` is sessions.message_bytes() (UTF-8 text and tool-call arguments);
    # rows written by version 1 get it computed here from their text.
    (2, (
        "CREATE TABLE tenants (tenant TEXT PRIMARY KEY, sessions INTEGER NOT NULL, changed INTEGER NOT NULL) "
        "WITHOUT ROWID",
        "CREATE INDEX tenants_by_size ON tenants (sessions DESC, changed)",
        "INSERT INTO tenants (tenant, sessions, changed) SELECT tenant, COUNT(*), 0 FROM sessions GROUP BY tenant",
        "UPDATE meta SET value = (SELECT COUNT(*) FROM sessions) WHERE name = 'sessions'",
        "ALTER TABLE messages ADD COLUMN bytes INTEGER NOT NULL DEFAULT 0",
        """UPDATE messages SET bytes = COALESCE(length(CAST(content AS BLOB)), 0)
            + CASE WHEN role = 'assistant' AND extra IS NOT NULL THEN (
                SELECT COALESCE(SUM(length(CAST(COALESCE(json_extract(value, '$.function.arguments'), '') AS BLOB))
                                    + length(COALESCE(json_extract(value, '$.function.name'), ''))), 0)
                FROM json_each(messages.extra)) ELSE 0 END""",
        "ALTER TABLE sessions ADD COLUMN bytes INTEGER NOT NULL DEFAULT 0",
        """UPDATE sessions SET bytes = (SELECT COALESCE(SUM(m.bytes), 0) FROM messages m
            WHERE m.tenant = sessions.tenant AND m.session_id = sessions.session_id)""",
    )),
    # Version 3: who answers the session (agent, waiting_for_human, human): the handoff to people.
    (3, (
        "ALTER TABLE sessions ADD COLUMN mode TEXT NOT NULL DEFAULT 'agent'",
    )),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]


class SessionDatabaseError(Exception):
    """The file cannot be used as the session database (a newer schema, not SQLite, no folder)."""


async def configure(db: aiosqlite.Connection, path: Path) -> None:
    """WAL with synchronous=FULL: a committed turn is on disk (WAL fsynced) before COMMIT returns,
    so an answered turn survives a crash of the process and of the machine."""
    await db.execute_fetchall(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS:d}")
    mode = await enable_wal(db, BUSY_TIMEOUT_MS)
    if mode.lower() != "wal":
        log.warning("session database %s runs in journal mode %s, not WAL", path, mode)
    await db.execute_fetchall("PRAGMA synchronous = FULL")


async def migrate(db: aiosqlite.Connection, path: Path) -> None:
    """Apply the missing migrations in one write transaction (the caller closes on failure, which
    rolls back)."""
    await db.execute_fetchall("BEGIN IMMEDIATE")
    current = int(next(iter(await db.execute_fetchall("PRAGMA user_version")))[0])
    if current > SCHEMA_VERSION:
        raise SessionDatabaseError(
            f"the session database {path} has schema version {current}, newer than this program supports "
            f"({SCHEMA_VERSION}); upgrade the program or use another SESSION_DB_PATH")
    for version, statements in MIGRATIONS:
        if version > current:
            for statement in statements:
                await db.execute_fetchall(statement)
            await db.execute_fetchall(f"PRAGMA user_version = {version:d}")
            log.info("session database migrated to schema version %d", version)
    await db.execute_fetchall("COMMIT")
