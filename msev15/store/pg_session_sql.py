"""The statements of the ``postgres`` session store (:mod:`msev15.store.pg_sessions`) whose shape
matters for round trips: each appends or inserts a whole turn in one statement (the session row
and every message through ``unnest``), so a turn costs as few round trips as its case allows.

Parameters of the append statements: $1 tenant, $2 session, $3 now, $4 visible messages added,
$5 messages added, $6 bytes added, $7 the TTL cutoff, $8..$13 the messages as columns (role,
content, ts, extra, bytes, visible); the capped form adds $14 max messages and $15 max bytes.
"""

from __future__ import annotations

# A session found by its key is live when its last activity is after the TTL cutoff. Point
# look-ups write that as ``last_activity - cutoff > 0`` (the same for every cutoff, -inf included),
# which no index matches: written ``last_activity > cutoff``, the generic plan PostgreSQL caches for
# a prepared statement (asyncpg prepares every one) could take sessions_by_tenant_activity instead
# of the primary key. It does, planned while the table is small (a new database): every look-up
# then walked all of the tenant's sessions until autovacuum's first ANALYZE replaced the plan.

SESSION = ("SELECT created_at, last_activity, visible_count, first_seq, next_seq, bytes, mode FROM sessions "
           "WHERE tenant = $1 AND session_id = $2")
# The live session's revision (``touched``), and its last $3 messages unless $5 is that revision
# (the tail the reader holds is current): no row, no live session; one row with no message, current.
CONTEXT = ("SELECT s.touched, m.role, m.content, m.ts, m.extra, m.bytes FROM sessions s LEFT JOIN LATERAL ("
           "SELECT role, content, ts, extra, bytes, seq FROM messages WHERE tenant = s.tenant "
           "AND session_id = s.session_id AND s.touched <> $5 ORDER BY seq DESC LIMIT $3) m ON true "
           "WHERE s.tenant = $1 AND s.session_id = $2 AND s.last_activity - $4 > 0 ORDER BY m.seq DESC")
# The append to a live session: one statement, the row and the messages together.
APPEND_TO = """
WITH s AS (
    UPDATE sessions SET last_activity = $3, prev_touched = touched, touched = nextval('session_touched'),
        visible_count = visible_count + $4, next_seq = next_seq + $5, bytes = bytes + $6
    WHERE tenant = $1 AND session_id = $2 AND last_activity - $7 > 0{within}
    RETURNING next_seq - $5 AS start, first_seq, visible_count, bytes, prev_touched, touched
), m AS (
    INSERT INTO messages (tenant, session_id, seq, role, content, ts, extra, bytes, visible)
    SELECT $1, $2, s.start + (m.i - 1)::int, m.role, m.content, m.ts, m.extra, m.bytes, m.visible
    FROM s, unnest($8::text[], $9::text[], $10::float8[], $11::text[], $12::int[], $13::bool[])
        WITH ORDINALITY AS m(role, content, ts, extra, bytes, visible, i)
)
SELECT start, first_seq, visible_count, bytes, prev_touched, touched FROM s"""
APPEND = APPEND_TO.format(within="")
# The usual turn: a live session that stays within its caps. One statement, atomic on its own, so
# no BEGIN/COMMIT: one round trip. Anything else (a new or expired session, a cap crossed) matches
# no row and takes the transaction below.
# Its last column says, when no row was appended, whether the session exists at all (a new one
# skips straight to the insert).
APPEND_WITHIN = (APPEND_TO.format(within=" AND next_seq + $5 - first_seq <= $14 AND ($15 = 0 OR bytes + $6 <= $15)")
                  .replace("SELECT start, first_seq, visible_count, bytes, prev_touched, touched FROM s",
                           "SELECT start, first_seq, visible_count, bytes, true, prev_touched, touched FROM s "
                           "UNION ALL SELECT NULL, NULL, NULL, NULL, EXISTS (SELECT 1 FROM sessions WHERE tenant = $1 "
                           "AND session_id = $2), NULL, NULL WHERE NOT EXISTS (SELECT 1 FROM s)"))
INSERT = """
WITH s AS (
    INSERT INTO sessions (tenant, session_id, created_at, last_activity, touched, visible_count, first_seq,
                          next_seq, bytes)
    VALUES ($1, $2, $3, $4, nextval('session_touched'), $5, 0, $6, $7)
    RETURNING touched
), m AS (
    INSERT INTO messages (tenant, session_id, seq, role, content, ts, extra, bytes, visible)
    SELECT $1, $2, (m.i - 1)::int, m.role, m.content, m.ts, m.extra, m.bytes, m.visible
    FROM unnest($8::text[], $9::text[], $10::float8[], $11::text[], $12::int[], $13::bool[])
        WITH ORDINALITY AS m(role, content, ts, extra, bytes, visible, i)
), t AS (
    INSERT INTO session_tenants (tenant, sessions, changed) VALUES ($1, 1, nextval('session_touched'))
    ON CONFLICT (tenant) DO UPDATE SET sessions = session_tenants.sessions + 1, changed = excluded.changed
    RETURNING sessions
), g AS (
    UPDATE session_meta SET value = value + 1 WHERE name = 'sessions' RETURNING value
)
SELECT g.value, t.sessions, s.touched FROM g, t, s"""
# A session's mode, changed only while it is live ({guard}: and only from an expected mode, $5).
SET_MODE = ("UPDATE sessions SET mode = $1 WHERE tenant = $2 AND session_id = $3 AND last_activity - $4 > 0{guard} "
            "RETURNING 1")
