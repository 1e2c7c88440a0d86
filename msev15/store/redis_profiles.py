"""Tenant profiles in Redis (SESSION_STORE=redis): every instance on every machine reads one history.

Two keys per tenant, in the tenant's slot: ``msev15:{tenant}:profile`` (a hash: ``current``, 0 for
none, and ``latest``) and ``msev15:{tenant}:profile:versions`` (a hash: ``p:<n>`` the profile JSON,
``a:<n>`` when, ``b:<n>`` by whom; the newest MAX_VERSIONS kept, which caps it). Profiles are
configuration: no TTL. Every write is one Lua script that checks and writes together, so of two
conditional writes racing from any instances exactly one wins.

The per-turn read (:meth:`RedisProfiles.current_version`) is one HGET of the head on the shared
Redis, so a write that returned is seen by every turn that starts afterwards on every instance.
Records are cached per process by version (a version never changes once written).
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis.asyncio as aioredis

from msev15.common.tasks import close_within
from msev15.store.profiles import MAX_VERSIONS, ProfileRecord, RecordCache, VersionConflict, stored_copy
from msev15.store.redis_kit import connect, tenant_key, text, translated
from msev15.store.redis_wire import wire

_CACHED_RECORDS = 1024

# KEYS: head, versions. ARGV: if_version ("" = unconditional), profile JSON ("" = copy version
# ARGV[5]), at, by, copy_of, max_versions. Reply: {n} written, {-1, current} conflict, {-2} no such version.
_WRITE = """
local current = tonumber(redis.call('HGET', KEYS[1], 'current') or '0')
if ARGV[1] ~= '' and tonumber(ARGV[1]) ~= current then return {-1, current} end
local profile = ARGV[2]
if profile == '' then
  profile = redis.call('HGET', KEYS[2], 'p:' .. ARGV[5])
  if not profile then return {-2} end
end
local n = tonumber(redis.call('HGET', KEYS[1], 'latest') or '0') + 1
redis.call('HSET', KEYS[2], 'p:' .. n, profile, 'a:' .. n, ARGV[3], 'b:' .. n, ARGV[4])
local old = n - tonumber(ARGV[6])
if old > 0 then redis.call('HDEL', KEYS[2], 'p:' .. old, 'a:' .. old, 'b:' .. old) end
redis.call('HSET', KEYS[1], 'current', n, 'latest', n)
return {n}
"""
_DELETE = """
local current = tonumber(redis.call('HGET', KEYS[1], 'current') or '0')
if current == 0 then return 0 end
redis.call('HSET', KEYS[1], 'current', 0)
return 1
"""


class RedisProfiles:
    def __init__(self, url: str, *, max_versions: int = MAX_VERSIONS) -> None:
        self._redis: aioredis.Redis = connect(url)
        self._hot = wire(url, self._redis)  # the current version, read on every turn (store/redis_wire.py)
        self.max_versions = max_versions
        self._write = self._redis.register_script(_WRITE)
        self._delete = self._redis.register_script(_DELETE)
        self._records = RecordCache(_CACHED_RECORDS)

    @staticmethod
    def head_key(tenant_id: str) -> str:
        """The tenant's profile hash, whose ``current`` field is its current version (absent: 0)."""
        return tenant_key(tenant_id, "profile")

    @staticmethod
    def _keys(tenant_id: str) -> list[str]:
        return [tenant_key(tenant_id, "profile"), tenant_key(tenant_id, "profile", "versions")]

    @translated
    async def current_version(self, tenant_id: str) -> int:
        raw = await self._hot.call("HGET", tenant_key(tenant_id, "profile"), "current")
        return int(raw) if raw else 0

    async def current(self, tenant_id: str) -> ProfileRecord | None:
        n = await self.current_version(tenant_id)
        return await self.version(tenant_id, n) if n else None

    @translated
    async def version(self, tenant_id: str, n: int) -> ProfileRecord | None:
        cached = self._records.get(tenant_id, n)
        if cached is not None:
            return cached
        fields = await self._redis.hmget(self._keys(tenant_id)[1], [f"p:{n}", f"a:{n}", f"b:{n}"])
        profile, at, by = fields
        if profile is None:
            return None
        return self._remember(tenant_id, n, text(profile), text(at or "0"), text(by or ""))

    @translated
    async def versions(self, tenant_id: str) -> list[ProfileRecord]:
        raw = await self._redis.hgetall(self._keys(tenant_id)[1])
        fields = {text(k): text(v) for k, v in raw.items()}
        numbers = sorted((int(k[2:]) for k in fields if k.startswith("p:")), reverse=True)
        return [self._remember(tenant_id, n, fields[f"p:{n}"], fields.get(f"a:{n}", "0"), fields.get(f"b:{n}", ""))
                for n in numbers]

    def _remember(self, tenant_id: str, n: int, profile: str, at: str, by: str) -> ProfileRecord:
        return self._records.remember(tenant_id, n, profile, at, by)

    async def _run_write(self, tenant_id: str, profile: str, by: str, if_version: int | None, copy_of: int) -> int:
        args: list[Any] = ["" if if_version is None else if_version, profile, repr(time.time()), by, copy_of,
                           self.max_versions]
        reply = await self._write(keys=self._keys(tenant_id), args=args)
        if int(reply[0]) == -1:
            raise VersionConflict(int(reply[1]))
        if int(reply[0]) == -2:
            raise LookupError(f"version {copy_of} is not kept")
        return int(reply[0])

    @translated
    async def put(self, tenant_id: str, profile: dict[str, Any], by: str, *, if_version: int | None = None) -> int:
        payload = json.dumps(stored_copy(profile), ensure_ascii=False)  # validated (ProfileInvalid) first
        return await self._run_write(tenant_id, payload, by, if_version, 0)

    @translated
    async def rollback(self, tenant_id: str, n: int, by: str) -> int:
        return await self._run_write(tenant_id, "", by, None, n)

    @translated
    async def delete(self, tenant_id: str, by: str) -> bool:
        return bool(await self._delete(keys=self._keys(tenant_id)[:1]))

    async def close(self) -> None:
        await close_within(self._hot.aclose(), "the profiles' hot-path Redis client")
        await close_within(self._redis.aclose(), "the profiles' Redis client")
