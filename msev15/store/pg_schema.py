"""The PostgreSQL schema as numbered migrations (applied by :func:`msev15.store.pg_kit.migrate`).

Append new versions; never edit one that has shipped. Each runs in one transaction.

Version 1, conversations (``SESSION_STORE=postgres``), the SQLite store's schema translated:
``sessions`` (one row per conversation; ``touched`` is the commit order, from a sequence, the
tie-break between equal timestamps; ``first_seq``..``next_seq`` the message numbers held;
``bytes`` the SESSION_MAX_BYTES cost), ``messages`` (clustered by ``(tenant, session_id, seq)``;
``visible`` is precomputed so counts need no JSON), ``session_tenants`` (sessions per tenant, for
the per-tenant cap and for choosing whom the global cap evicts) and ``session_meta`` ('sessions':
the global count, so the global cap needs no COUNT(*)).
"""

from __future__ import annotations

MIGRATIONS: tuple[tuple[int, str, tuple[str, ...]], ...] = (
    (1, "sessions", (
        """CREATE TABLE sessions (
            tenant TEXT NOT NULL,
            session_id TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            last_activity DOUBLE PRECISION NOT NULL,
            touched BIGINT NOT NULL,
            visible_count INTEGER NOT NULL,
            first_seq INTEGER NOT NULL,
            next_seq INTEGER NOT NULL,
            bytes BIGINT NOT NULL DEFAULT 0,
            mode TEXT NOT NULL DEFAULT 'agent',
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
            ts DOUBLE PRECISION NOT NULL,
            extra TEXT,
            bytes INTEGER NOT NULL,
            visible BOOLEAN NOT NULL,
            PRIMARY KEY (tenant, session_id, seq)
        )""",
        "CREATE SEQUENCE session_touched",
        "CREATE TABLE session_tenants (tenant TEXT PRIMARY KEY, sessions INTEGER NOT NULL, changed BIGINT NOT NULL)",
        "CREATE INDEX session_tenants_by_size ON session_tenants (sessions DESC, changed)",
        "CREATE TABLE session_meta (name TEXT PRIMARY KEY, value BIGINT NOT NULL)",
        "INSERT INTO session_meta (name, value) VALUES ('sessions', 0)",
    )),
    # Version 2, the pending calls of paused turns (store/pg_pending.py), as in SQLite: one paused
    # step per session and one row per decided call (kept after the step is taken, until the
    # session pauses again, so a late second decider still hears "already decided").
    (2, "pending calls", (
        "CREATE TABLE pending_turns (tenant TEXT NOT NULL, session_id TEXT NOT NULL, turn_id TEXT NOT NULL, "
        "expires_at DOUBLE PRECISION NOT NULL, body TEXT NOT NULL, remaining INTEGER NOT NULL, "
        "decided_at DOUBLE PRECISION NOT NULL DEFAULT 0, PRIMARY KEY (tenant, session_id))",
        "CREATE INDEX pending_turns_due ON pending_turns (expires_at)",
        "CREATE INDEX pending_turns_stalled ON pending_turns (remaining, decided_at)",
        "CREATE TABLE pending_decisions (tenant TEXT NOT NULL, session_id TEXT NOT NULL, call_id TEXT NOT NULL, "
        "decision TEXT NOT NULL, PRIMARY KEY (tenant, session_id, call_id))",
    )),
    # Version 3, answer feedback (store/pg_feedback.py): the completed turns that may be rated and
    # the ratings, one per (turn, caller).
    (3, "feedback", (
        "CREATE TABLE feedback_turns (tenant_id TEXT NOT NULL, session_id TEXT NOT NULL, turn_id TEXT NOT NULL, "
        "completed_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (tenant_id, session_id, turn_id))",
        "CREATE INDEX feedback_turns_by_time ON feedback_turns (completed_at)",
        "CREATE TABLE feedback (tenant_id TEXT NOT NULL, session_id TEXT NOT NULL, turn_id TEXT NOT NULL, "
        "caller TEXT NOT NULL, rating TEXT NOT NULL, comment TEXT, created_at DOUBLE PRECISION NOT NULL, "
        "PRIMARY KEY (tenant_id, session_id, turn_id, caller))",
        "CREATE INDEX feedback_by_time ON feedback (tenant_id, created_at)",
    )),
    # Version 4, handoff records (store/pg_handoffs.py): one row per session, as in SQLite.
    (4, "handoffs", (
        "CREATE TABLE handoffs (tenant TEXT NOT NULL, session_id TEXT NOT NULL, status TEXT NOT NULL, "
        "reason TEXT NOT NULL, summary TEXT NOT NULL, requested_at DOUBLE PRECISION NOT NULL, claimed_by TEXT, "
        "claimed_by_name TEXT, claimed_at DOUBLE PRECISION, ended_at DOUBLE PRECISION, "
        "PRIMARY KEY (tenant, session_id))",
        "CREATE INDEX handoffs_waiting ON handoffs (requested_at) WHERE status = 'waiting'",
    )),
    # Version 5, API keys (store/pg_apikeys.py): the SQLite table, digests only.
    (5, "api keys", (
        "CREATE TABLE api_keys (id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, name TEXT NOT NULL, "
        "digest TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL, last_used_at DOUBLE PRECISION, "
        "revoked_at DOUBLE PRECISION, role TEXT NOT NULL)",
    )),
    # Version 6, tenant profiles (store/pg_profiles.py): the SQLite tables, heads and immutable versions.
    (6, "tenant profiles", (
        "CREATE TABLE profile_heads (tenant_id TEXT PRIMARY KEY, current INTEGER NOT NULL, latest INTEGER NOT NULL)",
        "CREATE TABLE profile_versions (tenant_id TEXT NOT NULL, version INTEGER NOT NULL, profile TEXT NOT NULL, "
        "updated_at DOUBLE PRECISION NOT NULL, updated_by TEXT NOT NULL, PRIMARY KEY (tenant_id, version))",
    )),
    # Version 7, orders (store/pg_orders.py): the SQLite table; ``seq`` keeps insertion order as
    # the tie-break for equal timestamps; SKU and customer id are matched through lower() indexes.
    (7, "orders", (
        """CREATE TABLE orders (
            seq BIGSERIAL PRIMARY KEY,
            order_id TEXT NOT NULL UNIQUE,
            tenant_id TEXT NOT NULL,
            customer_id TEXT NOT NULL,
            product_sku TEXT NOT NULL,
            quantity INTEGER NOT NULL CHECK (quantity > 0),
            price_cents BIGINT NOT NULL CHECK (price_cents >= 0),
            shipping_address TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('pending', 'confirmed', 'shipped', 'delivered', 'cancelled')),
            notes TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )""",
        "CREATE INDEX orders_customer ON orders (tenant_id, lower(customer_id), created_at)",
        "CREATE INDEX orders_sku ON orders (tenant_id, lower(product_sku))",
        "CREATE INDEX orders_status ON orders (tenant_id, status)",
        "CREATE INDEX orders_created ON orders (tenant_id, created_at)",
    )),
    # Version 8: the handoff timeout's lease (store/handoffs.py take_timeout): who does a ticket's
    # work and until when, so another instance takes it over when its owner dies.
    (8, "handoff timeout lease", (
        "ALTER TABLE handoffs ADD COLUMN lease_owner TEXT, ADD COLUMN lease_until DOUBLE PRECISION",
        "CREATE INDEX handoffs_unsettled ON handoffs (lease_until) WHERE lease_owner IS NOT NULL",
    )),
    # Version 9: a session's revision before its last commit (store/pg_sessions.py): an append sets
    # ``prev_touched = touched, touched = nextval(...)`` and returns both, so the instance that made
    # it knows whether the tail it held was the list's tail just before (store/tails.py).
    (9, "session revisions", (
        "ALTER TABLE sessions ADD COLUMN prev_touched BIGINT",
    )),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]
