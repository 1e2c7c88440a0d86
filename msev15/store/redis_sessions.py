"""The ``redis`` session store: conversations shared by every instance.

Per session: a hash (``created_at``, ``last_activity``, ``visible_count``) and a list of messages
(each a JSON array ``[role, content, ts, extra]``); per tenant: a sorted set of its session ids
scored by last activity, so listing newest first at any offset is ZREVRANGE, never a scan. A turn
is committed by one Lua script (append, trim whole turns past SESSION_MAX_MESSAGES, count, index,
TTL): atomic, so nothing is ever half-written. With SESSION_TTL_SECONDS set, both keys expire by
themselves and the index drops them lazily.

Fencing: when the runner commits a turn for a session it coordinates across instances, it sets
``FENCE`` to the turn's entry in the session's turn queue; the script refuses the commit unless
that entry still heads the queue (an instance that lost its turn while paused cannot write).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from typing import Any

import redis.asyncio as aioredis

from msev15.store.base import FENCE, FencedOut, StoreStatus
from msev15.store.redis_kit import PREFIX, connect, tenant_key, text, translated
from msev15.store.sessions import Message, Page, Session

ALL_SESSIONS = f"{PREFIX}:sessions"  # every session of every tenant, by last activity (the global cap)

_COMMIT = """
-- KEYS: session hash, message list, tenant index, turn queue
-- ARGV: session_id, now, started_at, max_messages, ttl_ms, fence, messages (JSON arrays)...
if ARGV[6] ~= '' and redis.call('LINDEX', KEYS[4], 0) ~= ARGV[6] then
  return -1
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'created_at', ARGV[3], 'visible_count', 0)
end
local added = 0
for i = 7, #ARGV do
  redis.call('RPUSH', KEYS[2], ARGV[i])
  local m = cjson.decode(ARGV[i])
  if m[1] == 'user' or (m[1] == 'assistant' and m[4] == cjson.null) then added = added + 1 end
end
local visible = redis.call('HINCRBY', KEYS[1], 'visible_count', added)
redis.call('HSET', KEYS[1], 'last_activity', ARGV[2])
local max = tonumber(ARGV[4])
local length = redis.call('LLEN', KEYS[2])
if length > max then
  -- drop the oldest whole turns: cut at the first user message at or after the excess
  local items = redis.call('LRANGE', KEYS[2], 0, -1)
  local cut = length - max
  for i = length - max + 1, length do
    if cjson.decode(items[i])[1] == 'user' then cut = i - 1 break end
  end
  local dropped = 0
  for i = 1, cut do
    local m = cjson.decode(items[i])
    if m[1] == 'user' or (m[1] == 'assistant' and m[4] == cjson.null) then dropped = dropped + 1 end
  end
  redis.call('LTRIM', KEYS[2], cut, -1)
  visible = redis.call('HINCRBY', KEYS[1], 'visible_count', -dropped)
end
-- newest activity last, commit order kept when two commits share a timestamp
local score = tonumber(ARGV[2])
local top = redis.call('ZREVRANGE', KEYS[3], 0, 0, 'WITHSCORES')
if top[2] and tonumber(top[2]) >= score then score = tonumber(top[2]) + 0.000001 end
redis.call('ZADD', KEYS[3], score, ARGV[1])
local ttl = tonumber(ARGV[5])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
  redis.call('PEXPIRE', KEYS[3], ttl)
end
return visible
"""

_DELETE = """
-- KEYS: session hash, message list, tenant index; ARGV: session_id
local visible = redis.call('HGET', KEYS[1], 'visible_count')
redis.call('ZREM', KEYS[3], ARGV[1])
if not visible then return -1 end
redis.call('DEL', KEYS[1], KEYS[2])
return tonumber(visible)
"""


def _encode(role: str, content: str | None, ts: float, extra: Any = None) -> str:
    return json.dumps([role, content, ts, extra], separators=(",", ":"))


def _messages(user_text: str, started_at: float, steps: Iterable[dict[str, Any]], answer: str,
              now: float) -> list[str]:
    encoded = [_encode("user", user_text, started_at)]
    for step in steps:
        if step["role"] == "tool":
            encoded.append(_encode("tool", step["content"], now, step["tool_call_id"]))
        else:
            encoded.append(_encode("assistant", step.get("content"), now, step["tool_calls"]))
    encoded.append(_encode("assistant", answer, now))
    return encoded


def _decode(raw: str) -> Message:
    role, content, ts, extra = json.loads(raw)
    return Message(role, content, ts, extra)


class RedisSessions:
    kind = "redis"

    def __init__(self, client: aioredis.Redis, *, ttl_seconds: float = 0, max_messages: int = 1000,
                 max_sessions: int = 250_000, clock: Callable[[], float] = time.time) -> None:
        self._redis = client
        self.ttl = ttl_seconds
        self.max_messages = max_messages
        self.max_sessions = max_sessions
        self._clock = clock
        self._commit = client.register_script(_COMMIT)
        self._delete = client.register_script(_DELETE)

    @classmethod
    async def open(cls, url: str, *, ttl_seconds: float = 0, max_messages: int = 1000, max_sessions: int = 250_000,
                   clock: Callable[[], float] = time.time) -> RedisSessions:
        """A store on ``url``; nothing is connected yet (a Redis that is down never fails start-up)."""
        return cls(connect(url), ttl_seconds=ttl_seconds, max_messages=max_messages, max_sessions=max_sessions,
                   clock=clock)

    def _keys(self, tenant_id: str, session_id: str) -> tuple[str, str, str]:
        return (tenant_key(tenant_id, "sess", session_id), tenant_key(tenant_id, "msgs", session_id),
                tenant_key(tenant_id, "index"))

    def _alive(self, last_activity: float) -> bool:
        return not self.ttl or last_activity + self.ttl > self._clock()

    @translated
    async def get(self, tenant_id: str, session_id: str) -> Session | None:
        meta_key, msgs_key, _ = self._keys(tenant_id, session_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(meta_key)
            pipe.lrange(msgs_key, 0, -1)
            meta, raw = await pipe.execute()
        if not meta or not self._alive(float(meta["last_activity"])):
            return None
        session = Session(session_id, float(meta["created_at"]))
        session.last_activity = float(meta["last_activity"])
        session.visible_count = int(meta["visible_count"])
        session.messages = [_decode(item) for item in raw]
        return session

    @translated
    async def context(self, tenant_id: str, session_id: str, limit: int) -> list[dict[str, Any]]:
        meta_key, msgs_key, _ = self._keys(tenant_id, session_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hget(meta_key, "last_activity")
            pipe.lrange(msgs_key, -limit, -1)
            last, raw = await pipe.execute()
        if last is None or not self._alive(float(last)):
            return []
        tail = [_decode(item) for item in raw]
        start = next((i for i, m in enumerate(tail) if m.role != "tool"), len(tail))
        return [m.to_model() for m in tail[start:]]

    @translated
    async def commit_turn(self, tenant_id: str, session_id: str, user_text: str, started_at: float,
                          steps: Iterable[dict[str, Any]], answer: str) -> int:
        now = self._clock()
        keys = [*self._keys(tenant_id, session_id), tenant_key(tenant_id, "queue", session_id)]
        if self.ttl:
            # An idle session past its TTL starts over, as in the other stores.
            meta = await self._redis.hget(keys[0], "last_activity")
            if meta is not None and not self._alive(float(meta)):
                await self._redis.delete(keys[0], keys[1])
        args: list[str | int] = [session_id, repr(now), repr(started_at), self.max_messages, int(self.ttl * 1000),
                                 FENCE.get() or "", *_messages(user_text, started_at, steps, answer, now)]
        visible = int(await self._commit(keys=keys, args=args))
        if visible < 0:
            raise FencedOut("this turn no longer holds its session (another instance took it over)")
        await self._enforce_cap(tenant_id, session_id, now)
        return visible

    async def _enforce_cap(self, tenant_id: str, session_id: str, now: float) -> None:
        """SESSION_MAX_SESSIONS over every tenant: the least recently active sessions go. A global
        index outside the tenants' hash slots, so this runs just after the commit, not inside it."""
        member = f"{tenant_id}\x00{session_id}"
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zadd(ALL_SESSIONS, {member: now})
            pipe.zcard(ALL_SESSIONS)
            _, total = await pipe.execute()
        excess = int(total) - self.max_sessions
        if excess <= 0:
            return
        popped: list[tuple[bytes | str, float]] = await self._redis.zpopmin(ALL_SESSIONS, excess)  # type: ignore[assignment]  # redis-py types ZPOPMIN's reply loosely
        for victim, _score in popped:
            victim_tenant, _, victim_session = text(victim).partition("\x00")
            await self._delete(keys=list(self._keys(victim_tenant, victim_session)), args=[victim_session])

    @translated
    async def page(self, tenant_id: str, limit: int, offset: int) -> Page:
        index = tenant_key(tenant_id, "index")
        async with self._redis.pipeline(transaction=True) as pipe:
            if self.ttl:
                pipe.zremrangebyscore(index, "-inf", repr(self._clock() - self.ttl))
            pipe.zcard(index)
            pipe.zrevrange(index, offset, offset + limit - 1)
            *_, total, ids = await pipe.execute()
        if not ids:
            return Page(int(total), [])
        async with self._redis.pipeline(transaction=False) as pipe:
            for session_id in ids:
                pipe.hgetall(tenant_key(tenant_id, "sess", session_id))
            metas = await pipe.execute()
        sessions = []
        for session_id, meta in zip(ids, metas, strict=True):
            if not meta:  # expired or deleted between the two reads
                continue
            session = Session(session_id, float(meta["created_at"]))
            session.last_activity = float(meta["last_activity"])
            session.visible_count = int(meta["visible_count"])
            sessions.append(session)
        return Page(int(total), sessions)

    @translated
    async def delete(self, tenant_id: str, session_id: str) -> int | None:
        if await self.get(tenant_id, session_id) is None:
            return None
        deleted = int(await self._delete(keys=list(self._keys(tenant_id, session_id)), args=[session_id]))
        await self._redis.zrem(ALL_SESSIONS, f"{tenant_id}\x00{session_id}")
        return None if deleted < 0 else deleted

    async def expire(self) -> int:
        return 0  # keys carry their own TTL; indexes drop expired entries when read

    @translated
    async def count(self) -> int:
        if self.ttl:
            await self._redis.zremrangebyscore(ALL_SESSIONS, "-inf", repr(self._clock() - self.ttl))
        return int(await self._redis.zcard(ALL_SESSIONS))

    async def status(self) -> StoreStatus:
        try:
            await self._redis.ping()
        except Exception:
            return "unavailable"
        return "healthy"

    async def close(self) -> None:
        await self._redis.aclose()
