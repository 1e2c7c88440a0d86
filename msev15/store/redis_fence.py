"""The fence of a store outside Redis: does a turn still hold its session?

With ``SESSION_STORE=postgres`` and ``REDIS_URL``, turns are coordinated through the per-session
queue in Redis (``agent/redis_coordination.py``) and ``FENCE`` (``store/base.py``) is the turn's
queue entry. The Redis store checks it inside its commit script; PostgreSQL cannot see Redis, so
:class:`~msev15.store.pg_sessions.PostgresSessions` asks this check right before it commits. The
check and the commit are two steps, not one: an instance that loses its turn in the one round trip
between them can still write (the Redis store has no such window); one that lost it while paused
before committing, the case fencing exists for, cannot.
"""

from __future__ import annotations

from msev15.common.tasks import close_within
from msev15.store.redis_kit import connect, tenant_key, text, translated


class RedisFence:
    def __init__(self, url: str) -> None:
        self._redis = connect(url)

    @translated
    async def holds(self, tenant_id: str, session_id: str, token: str) -> bool:
        head = await self._redis.lindex(tenant_key(tenant_id, "queue", session_id), 0)
        return head is not None and text(head) == token

    async def close(self) -> None:
        await close_within(self._redis.aclose(), "the fence's Redis client")
