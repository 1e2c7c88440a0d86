"""API keys in Redis, for SESSION_STORE=redis: every instance on every machine sees one set of
keys, so ``msev15 keys revoke`` reaches them all (each caches a lookup for API_KEYS_CACHE_SECONDS).

One hash per key (``msev15:apikey:{id}``: tenant, name, digest, times) and a sorted set of ids by
creation for listing. As with SQLite, only the SHA-256 digest of a key is stored and it is
compared in constant time. Keys have no TTL: they live until revoked (and a revoked key's record
stays, for ``keys list``); their number is what operators create. A key stored before keys had
roles has no ``role`` field and reads as a ``customer``, as it was.
"""

from __future__ import annotations

import hmac
import secrets
import time

import redis.asyncio as aioredis

from msev15.common.roles import DEFAULT_ROLE, check_role
from msev15.common.tasks import close_within
from msev15.common.tenancy import check_tenant
from msev15.store.apikeys import PREFIX, ApiKey, digest, key_id
from msev15.store.redis_kit import PREFIX as KEY_PREFIX
from msev15.store.redis_kit import connect, text, text_map, translated

_INDEX = f"{KEY_PREFIX}:apikeys"


def _key(id_: str) -> str:
    return f"{KEY_PREFIX}:apikey:{id_}"


def _record(id_: str, fields: dict[str, str]) -> ApiKey:
    used, revoked = fields.get("last_used_at"), fields.get("revoked_at")
    return ApiKey(id_, fields["tenant_id"], fields.get("name", ""), float(fields["created_at"]),
                  float(used) if used else None, float(revoked) if revoked else None,
                  fields.get("role") or DEFAULT_ROLE)


class RedisApiKeyStore:
    def __init__(self, url: str) -> None:
        self._redis: aioredis.Redis = connect(url)

    @translated
    async def create(self, tenant_id: str, name: str = "", role: str = DEFAULT_ROLE) -> tuple[ApiKey, str]:
        tenant_id, role = check_tenant(tenant_id), check_role(role)
        new_id = secrets.token_hex(8)
        key = f"{PREFIX}{new_id}_{secrets.token_urlsafe(32)}"
        record = ApiKey(new_id, tenant_id, name, time.time(), role=role)
        # The index first, then the record, as two commands: the two keys are in different slots
        # of a Redis Cluster, so no transaction spans them. Cut between the two, the index holds an
        # id with no record: list() skips it and no credential verifies against it.
        await self._redis.zadd(_INDEX, {new_id: record.created_at})
        await self._redis.hset(_key(new_id), mapping={"tenant_id": tenant_id, "name": name, "digest": digest(key),
                                                      "created_at": repr(record.created_at), "role": role})
        return record, key

    @translated
    async def verify(self, key: str) -> ApiKey | None:
        found = key_id(key)
        if found is None:
            return None
        fields = text_map(await self._redis.hgetall(_key(found)))
        if not fields or not hmac.compare_digest(fields.get("digest", ""), digest(key)):
            return None
        record = _record(found, fields)
        if not record.active:
            return None
        await self._redis.hset(_key(found), "last_used_at", repr(time.time()))
        return record

    @translated
    async def list(self) -> list[ApiKey]:
        members: list[bytes | str] = await self._redis.zrange(_INDEX, 0, -1)  # type: ignore[assignment]  # redis-py types ZRANGE's reply loosely
        ids = [text(i) for i in members]
        async with self._redis.pipeline(transaction=False) as pipe:
            for id_ in ids:
                pipe.hgetall(_key(id_))
            rows = await pipe.execute()
        return [_record(id_, text_map(row)) for id_, row in zip(ids, rows, strict=True) if row]

    @translated
    async def revoke(self, key_id: str) -> bool:
        fields = text_map(await self._redis.hgetall(_key(key_id)))
        if not fields or fields.get("revoked_at"):
            return False
        await self._redis.hset(_key(key_id), "revoked_at", repr(time.time()))
        return True

    async def close(self) -> None:
        await close_within(self._redis.aclose(), "the API keys' Redis client")
