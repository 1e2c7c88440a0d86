"""The admission look of one instance on PostgreSQL (SESSION_STORE=postgres, no REDIS_URL): one
statement, as a turn is admitted, for what the turn would otherwise ask in three round trips
before its model call (see :class:`~msev15.agent.coordination.LocalCoordination`):

- the session's mode (is a person holding it?), from ``sessions`` as
  :meth:`~msev15.store.pg_sessions.PostgresSessions.mode` reads it (a session past its TTL has none);
- whether the session has a paused step, from ``pending_turns`` as
  :meth:`~msev15.store.pg_pending.PostgresPendingCalls.get` reads it (a row is a paused step);
- the tenant's current profile version, from ``profile_heads`` as
  :meth:`~msev15.store.pg_profiles.PostgresProfiles.current_version` reads it (no row: 0).

Each part is read only when its store is this database's (the topology says which), so an answer
never stands in for a store that lives elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable

from msev15.store.base import Looked
from msev15.store.pg_kit import Database, translated

_MODE = "(SELECT mode FROM sessions WHERE tenant = $1 AND session_id = $2 AND last_activity > $3)"
_PAUSED = "EXISTS (SELECT 1 FROM pending_turns WHERE tenant = $1 AND session_id = $2)"
_VERSION = "COALESCE((SELECT current FROM profile_heads WHERE tenant_id = $1), 0)"


class PostgresAdmissionLook:
    """``cutoff``: the session store's TTL cutoff now (None: the sessions are not in this database);
    ``pending`` / ``profiles``: the paused steps / the profiles are."""

    def __init__(self, db: Database, *, cutoff: Callable[[], float] | None, pending: bool, profiles: bool) -> None:
        self.db = db
        self._cutoff = cutoff
        self.reads_hold = cutoff is not None
        self.reads_paused = pending
        self._profiles = profiles
        self._statements: dict[tuple[bool, bool], str] = {}

    def _statement(self, hold: bool, paused: bool) -> str:
        found = self._statements.get((hold, paused))
        if found is None:
            parts = [_MODE if hold else "NULL::text", _PAUSED if paused else "NULL::boolean",
                     _VERSION if self._profiles else "NULL::integer"]
            found = self._statements[(hold, paused)] = "SELECT " + ", ".join(parts)
        return found

    @translated
    async def look(self, tenant_id: str, session_id: str, *, hold: bool, paused: bool) -> Looked:
        hold = hold and self._cutoff is not None
        paused = paused and self.reads_paused
        if not (hold or paused or self._profiles):
            return Looked(None, None, None)
        args: list[object] = [tenant_id]  # each parameter only when its part uses it (PostgreSQL types each)
        if hold or paused:
            args.append(session_id)
        if hold:
            assert self._cutoff is not None
            args.append(self._cutoff())
        async with self.db.connection() as conn:
            row = await conn.fetchrow(self._statement(hold, paused), *args)
        assert row is not None  # a SELECT without FROM has its one row
        mode, has_paused, version = row
        return Looked(None if mode is None else str(mode), None if has_paused is None else bool(has_paused),
                      None if version is None else int(version))
