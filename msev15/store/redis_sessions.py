"""The ``redis`` session store: conversations shared by every instance.

Per session: a hash (``created_at``, ``last_activity``, ``visible_count``, ``bytes``) and a list of
messages (each a JSON array ``[role, content, ts, extra, bytes]``); per tenant: a sorted set of its
session ids scored by last activity, so listing newest first at any offset is ZREVRANGE, never a
scan. With SESSION_TTL_SECONDS set, a session's keys expire by themselves; the tenant's index
(capped by the tenant's session cap) drops idle entries when a commit, a listing or the sweeper
(``expire()``) reads it, and the global counts follow.
The scripts are in :mod:`msev15.store.redis_session_scripts`.

What is atomic, and what is not:

- **Atomic with the turn** (one Lua script on the tenant's hash slot, so on a Redis Cluster too):
  append the turn; drop the oldest whole turns past SESSION_MAX_MESSAGES and past
  SESSION_MAX_BYTES (the newest turn always stays); index the session; and the tenant's own cap,
  SESSION_MAX_SESSIONS_PER_TENANT: the tenant's index is its exact count, and its least recently
  active sessions go in the same script. The per-tenant cap is never exceeded, by any number of
  instances.
- **Right after the turn, not atomic with it**: SESSION_MAX_SESSIONS across tenants. Every
  tenant's keys live in its own slot, so no script can see them all. A second script on a global
  slot (``msev15:{#sessions}:…``: sessions per tenant, sessions in all) applies the change in the
  tenant's count and claims one eviction per session over the cap from the tenant holding the
  most, taking it off that tenant's count in the same script; then a third script, on the
  claimed tenant's slot, drops that tenant's least recently active session (never the one just
  committed). Claims are atomic, so instances settling at the same time never evict twice for
  one excess. Between the commit and the eviction the total can be over the cap by the commits
  in flight. The global counts are kept by these scripts; they drift only if an instance dies
  between a script on a tenant's slot and its settling, or if keys vanish behind the scripts'
  backs (FLUSHDB, maxmemory eviction). A claim that finds fewer sessions than counted sets that
  tenant's count from its index, so an over-count heals when it matters; an under-count (a dead
  instance's new session) lasts until that session is deleted or expires.

Fencing: when the runner commits a turn for a session it coordinates across instances, it sets
``FENCE`` to the turn's entry in the session's turn queue; the commit script refuses the commit
unless that entry still heads the queue (an instance that lost its turn while paused cannot write).

Deadline: every commit also carries a deadline on Redis's clock (store/redis_deadline.py); past
it the script writes nothing. A commit that a stalled Redis runs after its client gave up (the
turn ended ``store_unavailable``) therefore never lands: a turn its client was told failed never
appears in the history.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

import redis.asyncio as aioredis

from msev15.common.tasks import close_within
from msev15.store import redis_session_scripts as scripts
from msev15.store.base import FENCE, FencedOut, StoreStatus, StoreUnavailable
from msev15.store.redis_deadline import RedisClock
from msev15.store.redis_kit import PREFIX, connect, tenant_key, text, translated
from msev15.store.redis_wire import HotPath, PyWire, Script, run_each, wire
from msev15.store.sessions import Message, Page, Session, check_mode, message_bytes, turn_messages
from msev15.store.tails import HeldTails

# The global accounting, in one hash slot of its own (ids start with a letter or digit, so no
# tenant's hash tag is "#sessions"): sessions per tenant, and sessions in all.
TENANT_COUNTS = f"{PREFIX}:{{#sessions}}:tenants"
TOTAL = f"{PREFIX}:{{#sessions}}:total"
STATUS_TIMEOUT_SECONDS = 1.0  # readiness answers within probe timeouts even while Redis stalls
SETTLE_ROUNDS = 8  # bounded: settle, evict what was claimed, settle the corrections, ...
DECODED_MAX_CHARS = 4 << 20  # the stored JSON of recently read messages kept decoded (about 2x in memory)


def _encode(message: Message, size: int) -> str:
    return json.dumps([message.role, message.content, message.ts, message.extra, size], separators=(",", ":"))


def _decode(raw: str) -> Message:
    role, content, ts, extra = json.loads(raw)[:4]  # lists written before sizes were stored hold four
    return Message(role, content, ts, extra)


class _Decoded:
    """Messages decoded lately, by their stored JSON: a turn reads its session's tail again on
    every turn, and decoding it was the largest cost of the Redis path (a fifth of the loop's
    CPU with 40 messages of context). A stored message never changes, so its JSON names it; the
    oldest entries go once the JSON held passes ``max_chars``. Messages are tuples and the memory
    store hands out its own the same way, so sharing them is safe."""

    def __init__(self, max_chars: int = DECODED_MAX_CHARS) -> None:
        self.max_chars = max_chars
        self._held: OrderedDict[str, Message] = OrderedDict()  # popitem(last=False) is O(1); a dict's is not
        self._chars = 0

    def __call__(self, raw: str) -> Message:
        found = self._held.get(raw)
        if found is None:
            found = self.remember(raw, _decode(raw))
        return found

    def remember(self, raw: str, message: Message) -> Message:
        """Hold ``message`` as ``raw``'s decoding (a commit knows both: the next turn's read hits)."""
        if raw not in self._held:
            self._held[raw] = message
            self._chars += len(raw)
            while self._chars > self.max_chars:
                self._chars -= len(self._held.popitem(last=False)[0])
        return message

    def __len__(self) -> int:
        return len(self._held)


class RedisSessions:
    kind = "redis"

    def __init__(self, client: aioredis.Redis, *, ttl_seconds: float = 0, max_messages: int = 1000,
                 max_sessions: int = 250_000, max_sessions_per_tenant: int = 0, max_bytes: int = 0,
                 clock: Callable[[], float] = time.time, hot: HotPath | None = None) -> None:
        self._redis = client
        # a turn's reads and writes (context, commit, settle): store/redis_wire.py
        self._hot = hot if hot is not None else PyWire(client)
        self.ttl = ttl_seconds
        self.max_messages = max_messages
        self.max_sessions = max_sessions
        self.max_sessions_per_tenant = max_sessions_per_tenant or max_sessions
        self.max_bytes = max_bytes  # 0: no byte budget
        self._clock = clock
        self._commit = Script(scripts.COMMIT)
        self._delete = client.register_script(scripts.DELETE)
        self._evict = Script(scripts.EVICT)
        self._settle_script = Script(scripts.SETTLE)
        self._set_mode = client.register_script(scripts.SET_MODE)
        self._clock_of_redis = RedisClock(self._hot)  # commits are refused past their deadline
        self.evicted = 0  # sessions this instance dropped by a session cap
        self._held = 0  # sessions in all, as last read from Redis (for metrics: no I/O)
        self._pruned: set[str] = set()  # tenants whose sessions this instance expired, for gone()
        self._decode = _Decoded()
        self.tails = HeldTails()
        self._context = Script(scripts.CONTEXT)
        self._revision_prefix = os.urandom(6).hex()  # commit revisions: unique across instances
        self._revisions = itertools.count(1)

    @classmethod
    async def open(cls, url: str, *, ttl_seconds: float = 0, max_messages: int = 1000, max_sessions: int = 250_000,
                   max_sessions_per_tenant: int = 0, max_bytes: int = 0,
                   clock: Callable[[], float] = time.time) -> RedisSessions:
        """A store on ``url``; nothing is connected yet (a Redis that is down never fails start-up)."""
        client = connect(url)
        return cls(client, ttl_seconds=ttl_seconds, max_messages=max_messages, max_sessions=max_sessions,
                   max_sessions_per_tenant=max_sessions_per_tenant, max_bytes=max_bytes, clock=clock,
                   hot=wire(url, client))

    def _cutoff(self) -> str:
        """Index scores at or below this are idle past the TTL ('' without a TTL)."""
        return repr(self._clock() - self.ttl) if self.ttl else ""

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
        session = Session(session_id, float(meta["created_at"]), meta.get("mode") or "agent")
        session.last_activity = float(meta["last_activity"])
        session.visible_count = int(meta["visible_count"])
        session.messages = [self._decode(item) for item in raw]
        return session

    @translated
    async def context(self, tenant_id: str, session_id: str, limit: int) -> list[dict[str, Any]]:
        meta_key, msgs_key, _ = self._keys(tenant_id, session_id)
        key = (tenant_id, session_id)
        revision, held = self.tails.known(key, limit)
        reply = await self._hot.run(self._context, [meta_key, msgs_key], [limit, revision])
        if not reply or not self._alive(float(reply[0])):
            self.tails.drop(key)
            return []
        if len(reply) == 2:  # the tail held here is current
            tail = held
        else:
            decode = self._decode
            tail = [decode(item) for item in reply[2]]
            self.tails.put(key, reply[1], limit, tail, [len(item) for item in reply[2]])
        start = next((i for i, m in enumerate(tail) if m.role != "tool"), len(tail))
        return [m.to_model() for m in tail[start:]]

    async def commit_turn(self, tenant_id: str, session_id: str, user_text: str, started_at: float,
                          steps: Iterable[dict[str, Any]], answer: str) -> int:
        now = self._clock()
        return await self._append(tenant_id, session_id, turn_messages(user_text, started_at, steps, answer, now),
                                  started_at, now)

    async def commit_messages(self, tenant_id: str, session_id: str, turn: list[Message],
                              started_at: float) -> int:
        return await self._append(tenant_id, session_id, turn, started_at, self._clock())

    @translated
    async def _append(self, tenant_id: str, session_id: str, turn: list[Message], started_at: float,
                      now: float) -> int:
        keys = [*self._keys(tenant_id, session_id), tenant_key(tenant_id, "queue", session_id)]
        sizes = [message_bytes(m) for m in turn]
        revision = f"{self._revision_prefix}.{next(self._revisions)}"
        args: list[str | int] = [
            session_id, repr(now), repr(started_at), self.max_messages, int(self.ttl * 1000), FENCE.get() or "",
            self.max_bytes, self.max_sessions_per_tenant, tenant_key(tenant_id, ""), self._cutoff(),
            sum(m.visible for m in turn), sum(sizes), await self._clock_of_redis.deadline(), revision]
        stored: list[int] = []
        for message, size in zip(turn, sizes, strict=True):
            raw = _encode(message, size)
            args.append(raw)
            stored.append(len(raw))
            self._decode.remember(raw, message)
        reply = await self._hot.run(self._commit, keys, args)
        visible, joined, evicted, expired = (int(v) for v in reply[:4])
        if visible >= 0:
            self.tails.extend((tenant_id, session_id), reply[4], revision, turn, stored, int(reply[5]))
        if visible == -2:  # Redis ran it past its deadline (a stall): nothing written, the turn fails
            raise StoreUnavailable("Redis ran the commit past its deadline; nothing was written")
        if visible < 0:
            raise FencedOut("this turn no longer holds its session (another instance took it over)")
        self.evicted += evicted
        if joined - evicted - expired:
            await self._settle([(tenant_id, joined - evicted - expired)], tenant_id, session_id if joined else "")
        return visible

    @translated
    async def mode(self, tenant_id: str, session_id: str) -> str | None:
        last, mode = await self._redis.hmget(self._keys(tenant_id, session_id)[0], ["last_activity", "mode"])
        if last is None or not self._alive(float(last)):
            return None
        return text(mode) if mode else "agent"

    def hold_probe(self, tenant_id: str, session_id: str) -> tuple[str, str]:
        """What a script needs to read :meth:`mode` in its own step (the coordination's admit
        script does, so a turn's hold check costs no round trip): the session's hash, whose
        ``mode`` field is the mode (absent: ``agent``), and the cutoff its ``last_activity`` must
        exceed to be live ('' without a TTL)."""
        return self._keys(tenant_id, session_id)[0], self._cutoff()

    @translated
    async def set_mode(self, tenant_id: str, session_id: str, mode: str, expect: str | None = None) -> bool:
        check_mode(mode)
        meta_key = self._keys(tenant_id, session_id)[0]
        return bool(await self._set_mode(keys=[meta_key], args=[mode, expect or "", self._cutoff()]))

    async def _settle(self, changes: list[tuple[str, int | str]], committer: str = "", spare: str = "") -> None:
        """Apply changes in tenants' counts to the global accounting, then evict what it claims
        over SESSION_MAX_SESSIONS (see the module's docstring). Never evicts ``spare`` (a session
        of ``committer`` just committed)."""
        for _ in range(SETTLE_ROUNDS):
            args: list[str | int] = [self.max_sessions, committer]
            for tenant, change in changes:
                args += [tenant, change]
            reply = await self._hot.run(self._settle_script, [TENANT_COUNTS, TOTAL], args)
            self._held = int(reply[0])
            changes = []
            for tenant, claimed in Counter(text(t) for t in reply[1:]).items():
                evicted, expired, holds = (int(v) for v in await self._hot.run(
                    self._evict, [tenant_key(tenant, "index")],
                    [tenant_key(tenant, ""), self._cutoff(), claimed, spare if tenant == committer else ""]))
                self.evicted += evicted
                if evicted + expired < claimed:  # counted more than it held (see the docstring): resync
                    changes.append((tenant, f"={holds}"))
                elif evicted + expired > claimed:  # the claims already took ``claimed`` off its count
                    changes.append((tenant, claimed - evicted - expired))
            if not changes:
                return

    @translated
    async def page(self, tenant_id: str, limit: int, offset: int) -> Page:
        index = tenant_key(tenant_id, "index")
        async with self._redis.pipeline(transaction=True) as pipe:
            if self.ttl:
                pipe.zremrangebyscore(index, "-inf", self._cutoff())
            pipe.zcard(index)
            pipe.zrevrange(index, offset, offset + limit - 1)
            *expired, total, ids = await pipe.execute()
        if expired and int(expired[0]):
            await self._settle([(tenant_id, -int(expired[0]))])
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
            session = Session(session_id, float(meta["created_at"]), meta.get("mode") or "agent")
            session.last_activity = float(meta["last_activity"])
            session.visible_count = int(meta["visible_count"])
            sessions.append(session)
        return Page(int(total), sessions)

    @translated
    async def delete(self, tenant_id: str, session_id: str) -> int | None:
        if await self.get(tenant_id, session_id) is None:
            return None
        deleted, left = (int(v) for v in await self._delete(keys=list(self._keys(tenant_id, session_id)),
                                                            args=[session_id]))
        if left:
            await self._settle([(tenant_id, -1)])
        return None if deleted < 0 else deleted

    @translated
    async def expire(self) -> int:
        """Keys expire by themselves; this takes idle sessions out of the tenants' indexes and the
        global counts (every tenant counted, a pipeline of scripts per batch of tenants)."""
        if not self.ttl:
            await self.count()  # refreshes held()
            return 0
        dropped = 0
        tenants = [text(t) async for t, _ in self._redis.zscan_iter(TENANT_COUNTS, count=500)]
        while tenants:
            cutoff = self._cutoff()
            replies = await run_each(self._hot, self._evict, [
                ([tenant_key(tenant, "index")], [tenant_key(tenant, ""), cutoff, 0, ""]) for tenant in tenants])
            expired = [(tenant, int(reply[1])) for tenant, reply in zip(tenants, replies, strict=True)
                       if int(reply[1])]
            self._pruned.update(tenant for tenant, _ in expired)
            dropped += sum(n for _, n in expired)
            await self._settle([(tenant, -n) for tenant, n in expired])
            # a tenant with a full batch of expired sessions may have more
            tenants = [tenant for tenant, n in expired if n >= scripts.PRUNE_BATCH]
        return dropped

    @translated
    async def gone(self) -> list[tuple[str, str]]:
        """The tenants' lists of expired sessions (written by the scripts that prune them, on any
        instance), taken and emptied: the tenants counted now and those this instance's sweep
        emptied."""
        tenants = {text(t) async for t, _ in self._redis.zscan_iter(TENANT_COUNTS, count=500)} | self._pruned
        self._pruned = set()
        gone: list[tuple[str, str]] = []
        for tenant in sorted(tenants):
            key = tenant_key(tenant, "gone")
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.lrange(key, 0, -1)
                pipe.delete(key)
                ids, _ = await pipe.execute()
            gone += [(tenant, text(i)) for i in ids]
        return gone

    @translated
    async def count(self) -> int:
        self._held = int(await self._redis.get(TOTAL) or 0)
        return self._held

    def held(self) -> int:
        """Sessions in all, as this instance last read them from Redis: no I/O (for metrics).
        Refreshed by its own commits and deletes and by the sweeper (``expire()``)."""
        return self._held

    async def status(self) -> StoreStatus:
        try:  # bounded: a stalled Redis must not stall the readiness probe with it
            await asyncio.wait_for(self._redis.ping(), STATUS_TIMEOUT_SECONDS)
        except Exception:
            return "unavailable"
        return "healthy"

    async def close(self) -> None:
        await close_within(self._hot.aclose(), "the sessions' hot-path Redis client")
        await close_within(self._redis.aclose(), "the sessions' Redis client")
