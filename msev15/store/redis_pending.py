"""Pending calls in Redis (SESSION_STORE=redis): any instance can decide a call another paused.

Per session one hash, ``msev15:{tenant}:pending:{session}``: ``body`` (the paused step's JSON),
``turn``, ``remaining``, ``w:{call_id}`` (the kind of each waiting call) and ``d:{call_id}`` (each
decision). Deciding is one script (HSETNX of the decision, then HINCRBY of ``remaining``), so of
two deciders of one call exactly one wins and exactly one decider sees the step's last decision;
taking is one script (read, then delete all but the decisions, which stay until the session
pauses again or the hash expires: a late second decider hears "already decided"), so exactly one
caller settles a step. The hash expires a
day after the step does (the sweep settles it before); expiries are found through one sorted
set, ``msev15:{#pending}:due``, scored by ``expires_at``, and steps whose every call is decided
through ``msev15:{#pending}:decided``, scored by the last decision (not atomic with the hash: an
entry whose hash is gone is dropped when the sweep finds it). Pausing is one script with a
deadline on Redis's clock (store/redis_deadline.py), like a session commit.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

import redis.asyncio as aioredis

from msev15.common.tasks import close_within
from msev15.store.base import StoreUnavailable
from msev15.store.pending import AlreadyDecided, PausedTurn, PendingNotFound
from msev15.store.redis_deadline import RedisClock, deadline_check
from msev15.store.redis_kit import PREFIX, connect, tenant_key, text, text_map, translated
from msev15.store.redis_wire import PyWire

DUE = f"{PREFIX}:{{#pending}}:due"
DECIDED = f"{PREFIX}:{{#pending}}:decided"  # steps whose every call is decided, scored by the last decision
GRACE_SECONDS = 86_400

_DECIDE = """
if not redis.call('HGET', KEYS[1], 'w:' .. ARGV[1]) then
  if redis.call('HEXISTS', KEYS[1], 'd:' .. ARGV[1]) == 1 then return -1 end
  return -2
end
if redis.call('HSETNX', KEYS[1], 'd:' .. ARGV[1], ARGV[2]) == 0 then return -1 end
return redis.call('HINCRBY', KEYS[1], 'remaining', -1)
"""

# KEYS: the session's pending hash. ARGV: 1 deadline on Redis's clock, 2 TTL seconds, 3.. field,
# value pairs. Replaces the hash; writes nothing past the deadline (returns 0): a pause a stalled
# Redis runs after its turn ended store_unavailable never shows up as waiting calls.
_PAUSE = deadline_check(1, "0") + """
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""

_TAKE = """
local turn = redis.call('HGET', KEYS[1], 'turn')
if not turn or (ARGV[1] ~= '' and turn ~= ARGV[1]) then return false end
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local name = all[i]
  if string.sub(name, 1, 2) ~= 'd:' then redis.call('HDEL', KEYS[1], name) end
end
return all
"""


def _key(tenant_id: str, session_id: str) -> str:
    return tenant_key(tenant_id, "pending", session_id)


def _member(tenant_id: str, session_id: str) -> str:
    return json.dumps([tenant_id, session_id], separators=(",", ":"))


def _paused(fields: dict[str, str]) -> PausedTurn:
    decisions = {name[2:]: json.loads(value) for name, value in fields.items() if name.startswith("d:")}
    return PausedTurn.loads(fields["body"], decisions)


class RedisPendingCalls:
    kind = "redis"

    def __init__(self, client: aioredis.Redis) -> None:
        self._redis = client
        self._decide = client.register_script(_DECIDE)
        self._take = client.register_script(_TAKE)
        self._pause = client.register_script(_PAUSE)
        self._clock = RedisClock(PyWire(client))  # a pause is refused past its deadline

    @classmethod
    def open(cls, url: str) -> RedisPendingCalls:
        return cls(connect(url))

    @translated
    async def pause(self, paused: PausedTurn) -> None:
        key = _key(paused.tenant_id, paused.session_id)
        ttl = max(1, math.ceil(paused.expires_at - time.time() + GRACE_SECONDS))
        fields: dict[str, str | int] = {"body": paused.dumps(), "turn": paused.turn_id, "remaining": paused.remaining,
                                        **{f"w:{w['call_id']}": w["kind"] for w in paused.waiting}}
        args: list[str | int] = [await self._clock.deadline(), ttl]
        for name, value in fields.items():
            args += [name, value]
        if not int(await self._pause(keys=[key], args=args)):
            raise StoreUnavailable("Redis ran the pause past its deadline; nothing was written")
        await self._redis.zadd(DUE, {_member(paused.tenant_id, paused.session_id): paused.expires_at})

    @staticmethod
    def paused_probe(tenant_id: str, session_id: str) -> tuple[str, str]:
        """What a script needs to tell whether the session has a paused step (the coordination's
        admit script does): the session's hash and the field only a paused step has (decisions
        may outlive a taken step in the same hash)."""
        return _key(tenant_id, session_id), "body"

    @translated
    async def get(self, tenant_id: str, session_id: str) -> PausedTurn | None:
        fields = text_map(await self._redis.hgetall(_key(tenant_id, session_id)))
        return _paused(fields) if "body" in fields else None

    @translated
    async def decide(self, tenant_id: str, session_id: str, call_id: str, decision: dict[str, Any]) -> int:
        result = int(await self._decide(keys=[_key(tenant_id, session_id)], args=[call_id, json.dumps(decision)]))
        if result == -2:
            raise PendingNotFound(call_id)
        if result == -1:
            raise AlreadyDecided(call_id)
        if result == 0:  # the step's last decision: found by the sweep if its continuation is lost
            await self._redis.zadd(DECIDED, {_member(tenant_id, session_id): float(decision.get("decided_at", 0.0))})
        return result

    @translated
    async def decided(self, tenant_id: str, session_id: str, call_id: str) -> bool:
        return bool(await self._redis.hexists(_key(tenant_id, session_id), f"d:{call_id}"))

    @translated
    async def take(self, tenant_id: str, session_id: str, turn_id: str | None = None) -> PausedTurn | None:
        raw = await self._take(keys=[_key(tenant_id, session_id)], args=[turn_id or ""])
        if not raw:
            return None
        await self._redis.zrem(DUE, _member(tenant_id, session_id))
        await self._redis.zrem(DECIDED, _member(tenant_id, session_id))
        values = [text(v) for v in raw]
        return _paused(dict(zip(values[::2], values[1::2], strict=True)))

    @translated
    async def due(self, now: float, limit: int = 100) -> list[tuple[str, str, str]]:
        return await self._listed(DUE, now, limit)

    @translated
    async def stalled(self, before: float, limit: int = 100) -> list[tuple[str, str, str]]:
        return await self._listed(DECIDED, before, limit, below=True)

    async def _listed(self, index: str, score: float, limit: int, below: bool = False) -> list[tuple[str, str, str]]:
        """The steps an index holds up to ``score`` (strictly below it with ``below``), dropping
        entries whose step is gone."""
        found: list[tuple[str, str, str]] = []
        top = f"({score!r}" if below else score
        for member in await self._redis.zrangebyscore(index, "-inf", top, start=0, num=limit):
            assert isinstance(member, str)  # the client decodes replies
            tenant_id, session_id = json.loads(member)
            turn = await self._redis.hget(_key(tenant_id, session_id), "turn")
            if turn is None:  # settled, or its hash expired: nothing to do but forget it
                await self._redis.zrem(index, member)
            else:
                found.append((tenant_id, session_id, text(turn)))
        return found

    async def close(self) -> None:
        await close_within(self._redis.aclose(), "the pending calls' Redis client")
