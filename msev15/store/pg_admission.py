"""The admission look of one instance on PostgreSQL (SESSION_STORE=postgres, no REDIS_URL): one
statement, as a turn is admitted, for what the turn would otherwise ask in four round trips
before its model call (see :class:`~msev15.agent.coordination.LocalCoordination`):

- the session's mode (is a person holding it?), from ``sessions`` as
  :meth:`~msev15.store.pg_sessions.PostgresSessions.mode` reads it (a session past its TTL has none);
- whether the session has a paused step, from ``pending_turns`` as
  :meth:`~msev15.store.pg_pending.PostgresPendingCalls.get` reads it (a row is a paused step);
- the tenant's current profile version, from ``profile_heads`` as
  :meth:`~msev15.store.pg_profiles.PostgresProfiles.current_version` reads it (no row: 0);
- when asked, the session's context as
  :meth:`~msev15.store.pg_sessions.PostgresSessions.context` reads it (its messages only when
  the tail this instance holds is not current), with a check that this instance has written
  nothing to the session since the read began; the turn uses the context only when that still
  holds as it starts, and no other turn of its session could have run first (the coordination
  decides).

Each part is read only when its store is this database's (the topology says which), so an answer
never stands in for a store that lives elsewhere.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from msev15.store.base import Looked
from msev15.store.pg_kit import Database, translated
from msev15.store.pg_sessions import PostgresSessions

_MODE = "(SELECT mode FROM sessions WHERE tenant = $1 AND session_id = $2 AND last_activity - $3 > 0)"
_PAUSED = "EXISTS (SELECT 1 FROM pending_turns WHERE tenant = $1 AND session_id = $2)"
_VERSION = "COALESCE((SELECT current FROM profile_heads WHERE tenant_id = $1), 0)"
# (``last_activity - cutoff > 0``: a look-up by primary key whatever plan is cached; see pg_session_sql.py)
# With the context: the live session's row (none: no row joined), then its last $5 messages unless
# $4 is its revision (store/pg_session_sql.py CONTEXT); one row at least, the facts in each.
_WITH_CONTEXT = ("SELECT s.mode, {paused}, {version}, s.touched, m.role, m.content, m.ts, m.extra, m.bytes "
                 "FROM (SELECT 1) AS one LEFT JOIN sessions s ON s.tenant = $1 AND s.session_id = $2 "
                 "AND s.last_activity - $3 > 0 LEFT JOIN LATERAL (SELECT role, content, ts, extra, bytes, seq "
                 "FROM messages WHERE tenant = s.tenant AND session_id = s.session_id AND s.touched <> $4 "
                 "ORDER BY seq DESC LIMIT $5) m ON true ORDER BY m.seq DESC")


class PostgresAdmissionLook:
    """``sessions``: the session store when it is this database's (else None: no mode, no
    context); ``pending`` / ``profiles``: the paused steps / the profiles are this database's;
    ``context_limit``: the turn's context messages (SESSION_MAX_CONTEXT_MESSAGES)."""

    def __init__(self, db: Database, *, sessions: PostgresSessions | None, pending: bool, profiles: bool,
                 context_limit: int = 0) -> None:
        self.db = db
        self.sessions = sessions
        self.reads_hold = sessions is not None
        self.reads_paused = pending
        self.reads_context = sessions is not None and context_limit > 0
        self.context_limit = context_limit
        self._profiles = profiles
        self._statements: dict[tuple[bool, bool, bool], str] = {}

    def _statement(self, hold: bool, paused: bool, context: bool) -> str:
        found = self._statements.get((hold, paused, context))
        if found is None:
            paused_part = _PAUSED if paused else "NULL::boolean"
            version_part = _VERSION if self._profiles else "NULL::integer"
            if context:
                found = _WITH_CONTEXT.format(paused=paused_part, version=version_part)
            else:
                found = "SELECT " + ", ".join([_MODE if hold else "NULL::text", paused_part, version_part])
            self._statements[(hold, paused, context)] = found
        return found

    @translated
    async def look(self, tenant_id: str, session_id: str, *, hold: bool, paused: bool,
                   context: bool = False) -> Looked:
        sessions = self.sessions
        hold = hold and sessions is not None
        paused = paused and self.reads_paused
        context = context and self.reads_context
        if not (hold or paused or context or self._profiles):
            return Looked(None, None, None)
        args: list[Any] = [tenant_id]  # each parameter only when its part uses it (PostgreSQL types each)
        if hold or paused or context:
            args.append(session_id)
        if hold or context:
            assert sessions is not None
            args.append(sessions.cutoff())
        async with self.db.connection() as conn:
            if not context:
                row = await conn.fetchrow(self._statement(hold, paused, False), *args)
                assert row is not None  # a SELECT without FROM has its one row
                return _looked(row)
            assert sessions is not None
            key = (tenant_id, session_id)
            mark = sessions.marks.mark(key)  # before the read: a write from now on shows
            revision, held = sessions.tails.known(key, self.context_limit)
            rows = await conn.fetch(self._statement(hold, paused, True), *args, int(revision or 0),
                                    self.context_limit)
        first = rows[0]  # the outer join keeps one row whatever is found
        tail = [] if first[3] is None else [r[3:] for r in rows]
        messages = sessions.tail_of(tenant_id, session_id, self.context_limit, (revision, held, tail))
        current = functools.partial(sessions.marks.unchanged, key, mark)
        return _looked(first if hold else (None, *first[1:3]), messages, current)


def _looked(row: Any, context: list[dict[str, Any]] | None = None,
            current: Callable[[], bool] | None = None) -> Looked:
    mode, has_paused, version = row[0], row[1], row[2]
    return Looked(None if mode is None else str(mode), None if has_paused is None else bool(has_paused),
                  None if version is None else int(version), context, current)
