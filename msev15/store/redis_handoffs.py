"""Handoff records in Redis (SESSION_STORE=redis): every instance sees one queue.

Per session a hash ``msev15:{tenant}:handoff:{session}`` (the record's fields); per tenant a
sorted set ``msev15:{tenant}:handoffs`` of its sessions with a record, scored by request time.
Both carry the tenant's hash tag, so each script below runs on one slot. A claim is one Lua
script (read the status and holder, write the claim): two instances claiming at once get exactly
one winner. An ended record expires after ENDED_RETENTION_SECONDS; listing drops index entries
whose record is gone.
"""

from __future__ import annotations

import builtins
import json
from typing import Any, Literal

import redis.asyncio as aioredis

from msev15.common.tasks import close_within
from msev15.store.handoffs import ENDED_RETENTION_SECONDS, ClaimOutcome, HandoffRecord, Status
from msev15.store.redis_kit import PREFIX, connect, tenant_key, text, text_map, translated

# Every tenant's waiting handoffs, for the timeout sweep: [tenant, session] scored by request time.
WAITING = f"{PREFIX}:handoffs:waiting"
# Every tenant's ticketed handoffs whose timeout work is not settled: [tenant, session] scored by
# the lease's end (written before the take, so a crash never leaves a lease nobody can find).
LEASES = f"{PREFIX}:handoffs:leases"

# KEYS: 1 record. ARGV: 1 owner, 2 now, 3 lease until, 4 requested before, 5 retention seconds.
_TAKE = """
local f = redis.call('HMGET', KEYS[1], 'status', 'requested_at', 'lease_owner', 'lease_until')
if f[1] == 'waiting' and tonumber(f[2]) < tonumber(ARGV[4]) then
  redis.call('HSET', KEYS[1], 'status', 'ticketed', 'ended_at', ARGV[2], 'lease_owner', ARGV[1], 'lease_until', ARGV[3])
  redis.call('EXPIRE', KEYS[1], ARGV[5])
  return redis.call('HGETALL', KEYS[1])
end
if f[1] == 'ticketed' and f[3] and f[3] ~= '' and f[4] and tonumber(f[4]) < tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], 'lease_owner', ARGV[1], 'lease_until', ARGV[3])
  return redis.call('HGETALL', KEYS[1])
end
return {}
"""

# KEYS: 1 record. ARGV: 1 owner.
_SETTLE = """
if redis.call('HGET', KEYS[1], 'status') ~= 'ticketed' or redis.call('HGET', KEYS[1], 'lease_owner') ~= ARGV[1] then
  return 0
end
redis.call('HDEL', KEYS[1], 'lease_owner', 'lease_until')
return 1
"""

# KEYS: 1 record, 2 index. ARGV: 1 session id, 2 now, 3 reason, 4 summary.
_REQUEST = """
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'waiting' and status ~= 'active' then
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'status', 'waiting', 'reason', ARGV[3], 'summary', ARGV[4], 'requested_at', ARGV[2])
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
end
return redis.call('HGETALL', KEYS[1])
"""

# KEYS: 1 record, 2 index. ARGV: 1 session id, 2 now, 3 operator id, 4 operator name.
# Returns {1 claimed | 0 already claimed, the record's fields...}.
_CLAIM = """
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'active' then
  if redis.call('HGET', KEYS[1], 'claimed_by') ~= ARGV[3] then return {0, redis.call('HGETALL', KEYS[1])} end
  return {1, redis.call('HGETALL', KEYS[1])}
end
if status ~= 'waiting' then
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'reason', 'Taken over by an operator', 'summary', '', 'requested_at', ARGV[2])
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
end
redis.call('HSET', KEYS[1], 'status', 'active', 'claimed_by', ARGV[3], 'claimed_by_name', ARGV[4],
           'claimed_at', ARGV[2])
redis.call('PERSIST', KEYS[1])
return {1, redis.call('HGETALL', KEYS[1])}
"""

# KEYS: 1 record. ARGV: 1 new status, 2 now, 3 expected status ('' any live), 4 retention seconds.
_END = """
local status = redis.call('HGET', KEYS[1], 'status')
if (status ~= 'waiting' and status ~= 'active') or (ARGV[3] ~= '' and status ~= ARGV[3]) then return {} end
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'ended_at', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return redis.call('HGETALL', KEYS[1])
"""


def _fields(flat: list[Any]) -> dict[str, str]:
    return {text(flat[i]): text(flat[i + 1]) for i in range(0, len(flat), 2)}


def _float(value: str | None) -> float | None:
    return float(value) if value else None


def _record(tenant_id: str, session_id: str, f: dict[str, str]) -> HandoffRecord:
    return HandoffRecord(tenant_id, session_id, f["status"], f.get("reason", ""),  # type: ignore[arg-type]
                         f.get("summary", ""), float(f["requested_at"]), f.get("claimed_by") or None,
                         f.get("claimed_by_name") or None, _float(f.get("claimed_at")), _float(f.get("ended_at")),
                         f.get("lease_owner") or None, _float(f.get("lease_until")))


class RedisHandoffs:
    def __init__(self, url: str) -> None:
        self._redis: aioredis.Redis = connect(url)
        self._request = self._redis.register_script(_REQUEST)
        self._claim = self._redis.register_script(_CLAIM)
        self._end = self._redis.register_script(_END)
        self._take = self._redis.register_script(_TAKE)
        self._settle = self._redis.register_script(_SETTLE)

    @staticmethod
    def _keys(tenant_id: str, session_id: str) -> list[str]:
        return [tenant_key(tenant_id, "handoff", session_id), tenant_key(tenant_id, "handoffs")]

    @translated
    async def request(self, tenant_id: str, session_id: str, reason: str, summary: str, now: float) -> HandoffRecord:
        flat = await self._request(keys=self._keys(tenant_id, session_id),
                                   args=[session_id, repr(now), reason, summary])
        record = _record(tenant_id, session_id, _fields(flat))
        if record.status == "waiting" and record.requested_at == now:  # a new one: the timeout sweep's too
            await self._redis.zadd(WAITING, {json.dumps([tenant_id, session_id]): now})
        return record

    @translated
    async def get(self, tenant_id: str, session_id: str) -> HandoffRecord | None:
        fields = text_map(await self._redis.hgetall(self._keys(tenant_id, session_id)[0]))
        return _record(tenant_id, session_id, fields) if fields else None

    @translated
    async def list(self, tenant_id: str, status: Status | Literal["all"]) -> list[HandoffRecord]:
        index = tenant_key(tenant_id, "handoffs")
        members: list[bytes | str] = await self._redis.zrange(index, 0, -1)  # type: ignore[assignment]  # redis-py types ZRANGE's reply loosely
        ids = [text(i) for i in members]
        async with self._redis.pipeline(transaction=False) as pipe:
            for session_id in ids:
                pipe.hgetall(tenant_key(tenant_id, "handoff", session_id))
            rows = await pipe.execute()
        found, gone = [], []
        for session_id, row in zip(ids, rows, strict=True):
            if not row:
                gone.append(session_id)
                continue
            record = _record(tenant_id, session_id, text_map(row))
            if status == "all" or record.status == status:
                found.append(record)
        if gone:
            await self._redis.zrem(index, *gone)
        return found

    @translated
    async def claim(self, tenant_id: str, session_id: str, operator_id: str, operator_name: str,
                    now: float) -> tuple[ClaimOutcome, HandoffRecord]:
        won, flat = await self._claim(keys=self._keys(tenant_id, session_id),
                                      args=[session_id, repr(now), operator_id, operator_name])
        return ("claimed" if int(won) else "already_claimed"), _record(tenant_id, session_id, _fields(flat))

    @translated
    async def end(self, tenant_id: str, session_id: str, status: Literal["released", "ticketed"], now: float,
                  expect: Status | None = None) -> HandoffRecord | None:
        flat = await self._end(keys=self._keys(tenant_id, session_id)[:1],
                               args=[status, repr(now), expect or "", ENDED_RETENTION_SECONDS])
        return _record(tenant_id, session_id, _fields(flat)) if flat else None

    @translated
    async def overdue(self, before: float, limit: int = 100) -> builtins.list[HandoffRecord]:
        """Candidates from the global index (written after the record: a crash between the two
        leaves that handoff to wait for an operator). Entries whose record is no longer waiting
        leave the index here."""
        members: list[str] = await self._redis.zrangebyscore(  # type: ignore[assignment]  # typed loosely
            WAITING, "-inf", f"({before!r}", start=0, num=limit)
        found, stale = [], []
        for member in members:
            tenant_id, session_id = json.loads(member)
            record = await self.get(tenant_id, session_id)
            if record is None or record.status != "waiting" or record.requested_at >= before:
                stale.append(member)
            else:
                found.append(record)
        if stale:
            await self._redis.zrem(WAITING, *stale)
        return found

    @translated
    async def take_timeout(self, tenant_id: str, session_id: str, owner: str, now: float, lease_until: float,
                           before: float) -> HandoffRecord | None:
        await self._redis.zadd(LEASES, {json.dumps([tenant_id, session_id]): lease_until})
        flat = await self._take(keys=self._keys(tenant_id, session_id)[:1],
                                args=[owner, repr(now), repr(lease_until), repr(before), ENDED_RETENTION_SECONDS])
        return _record(tenant_id, session_id, _fields(flat)) if flat else None

    @translated
    async def settle_timeout(self, tenant_id: str, session_id: str, owner: str) -> bool:
        settled = bool(int(await self._settle(keys=self._keys(tenant_id, session_id)[:1], args=[owner])))
        if settled:
            await self._redis.zrem(LEASES, json.dumps([tenant_id, session_id]))
        return settled

    @translated
    async def unsettled(self, now: float, limit: int = 100) -> builtins.list[HandoffRecord]:
        """Candidates from the lease index; entries whose record is settled or gone leave it, and
        one whose lease was renewed moves to its new end."""
        members: list[str] = await self._redis.zrangebyscore(  # type: ignore[assignment]  # typed loosely
            LEASES, "-inf", f"({now!r}", start=0, num=limit)
        found, stale = [], []
        for member in members:
            tenant_id, session_id = json.loads(member)
            record = await self.get(tenant_id, session_id)
            if record is None or record.status != "ticketed" or record.lease_until is None:
                stale.append(member)
            elif record.lease_until < now:
                found.append(record)
            else:
                await self._redis.zadd(LEASES, {member: record.lease_until})
        if stale:
            await self._redis.zrem(LEASES, *stale)
        return found

    @translated
    async def forget(self, tenant_id: str, session_id: str) -> None:
        record, index = self._keys(tenant_id, session_id)
        member = json.dumps([tenant_id, session_id])
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.delete(record)
            pipe.zrem(index, session_id)
            pipe.zrem(WAITING, member)
            pipe.zrem(LEASES, member)
            await pipe.execute()

    async def close(self) -> None:
        await close_within(self._redis.aclose(), "the handoffs' Redis client")
