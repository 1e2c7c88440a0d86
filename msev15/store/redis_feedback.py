"""Feedback on Redis (SESSION_STORE=redis): shared by every instance, beside the sessions.

Keys (the tenant as hash tag, so one script changes them together on a cluster too):

- ``msev15:{tenant}:fbturns:{session}`` — a set of the session's completed turn ids, expiring with
  the session (SESSION_TTL_SECONDS; 30 days when sessions never expire);
- ``msev15:{tenant}:feedback`` — a hash ``session␟turn␟caller`` → the rating as JSON;
- ``msev15:{tenant}:feedback:time`` — a sorted set of the same fields by time, capped at
  MAX_PER_TENANT (the oldest ratings are dropped from both, in the same script).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, cast

from msev15.common.tasks import close_within
from msev15.store.feedback import MAX_PER_TENANT, CompletedTurn, Feedback, Rating, keep_seconds
from msev15.store.redis_kit import connect, tenant_key, text, translated
from msev15.store.redis_wire import Command, raise_errors, wire

SEP = "\x1f"

# KEYS: hash, by-time; ARGV: field, json, created_at, cap. Returns 1 for a new rating, 0 for a replace.
RATE_SCRIPT = """
local new = redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[4])
if over > 0 then
  local old = redis.call('ZRANGE', KEYS[2], 0, over - 1)
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, over - 1)
  redis.call('HDEL', KEYS[1], unpack(old))
end
return new
"""
# KEYS: hash, by-time; ARGV: the session's field prefix. Drops the session's ratings from both.
FORGET_SCRIPT = """
local fields = {}
for _, field in ipairs(redis.call('HKEYS', KEYS[1])) do
  if string.sub(field, 1, string.len(ARGV[1])) == ARGV[1] then table.insert(fields, field) end
end
for i = 1, #fields, 500 do
  local batch = {unpack(fields, i, math.min(i + 499, #fields))}
  redis.call('HDEL', KEYS[1], unpack(batch))
  redis.call('ZREM', KEYS[2], unpack(batch))
end
return #fields
"""
PAGE = 200


class RedisFeedback:
    def __init__(self, url: str, *, session_ttl_seconds: float = 0, max_per_tenant: int = MAX_PER_TENANT) -> None:
        self._redis = connect(url)
        self._hot = wire(url, self._redis)  # remember, after every turn (store/redis_wire.py)
        self.keep = int(keep_seconds(session_ttl_seconds))
        self.max_per_tenant = max_per_tenant
        self._rate = self._redis.register_script(RATE_SCRIPT)
        self._forget = self._redis.register_script(FORGET_SCRIPT)

    @translated
    async def remember(self, turns: Iterable[CompletedTurn]) -> None:
        commands: list[Command] = []
        for turn in turns:
            key = tenant_key(turn.tenant_id, "fbturns", turn.session_id)
            commands += [("SADD", key, turn.turn_id), ("EXPIRE", key, self.keep)]
        if commands:
            raise_errors(await self._hot.batch(commands))

    @translated
    async def known(self, tenant_id: str, session_id: str, turn_id: str) -> bool:
        found = await cast(Any, self._redis.sismember(tenant_key(tenant_id, "fbturns", session_id), turn_id))
        return bool(found)

    @translated
    async def rate(self, feedback: Feedback) -> bool:
        f = feedback
        field = SEP.join((f.session_id, f.turn_id, f.caller))
        value = json.dumps({"rating": f.rating, "comment": f.comment, "created_at": f.created_at})
        new = await self._rate(keys=[tenant_key(f.tenant_id, "feedback"), tenant_key(f.tenant_id, "feedback", "time")],
                               args=[field, value, repr(f.created_at), self.max_per_tenant])
        return int(new) == 0

    @translated
    async def list(self, tenant_id: str, *, rating: Rating | None = None, since: float | None = None,
                   limit: int = 50) -> list[Feedback]:
        found: list[Feedback] = []
        low = "-inf" if since is None else repr(since)
        start = 0
        while len(found) < limit:
            page = await cast(Any, self._redis.zrevrangebyscore(
                tenant_key(tenant_id, "feedback", "time"), "+inf", low, start=start, num=PAGE))
            fields = [text(f) for f in page]
            if not fields:
                break
            start += len(fields)
            values = await cast(Any, self._redis.hmget(tenant_key(tenant_id, "feedback"), fields))
            for field, raw in zip(fields, values, strict=True):
                if raw is None:
                    continue
                item = json.loads(raw)
                if rating is not None and item["rating"] != rating:
                    continue
                session_id, turn_id, caller = field.split(SEP)
                found.append(Feedback(tenant_id, session_id, turn_id, caller, item["rating"], item["comment"],
                                      float(item["created_at"])))
                if len(found) >= limit:
                    break
        return found

    @translated
    async def forget(self, tenant_id: str, session_id: str) -> None:
        await self._redis.delete(tenant_key(tenant_id, "fbturns", session_id))
        await self._forget(keys=[tenant_key(tenant_id, "feedback"), tenant_key(tenant_id, "feedback", "time")],
                           args=[session_id + SEP])

    async def close(self) -> None:
        await close_within(self._hot.aclose(), "the feedback's hot-path Redis client")
        await close_within(self._redis.aclose(), "the feedback's Redis client")
