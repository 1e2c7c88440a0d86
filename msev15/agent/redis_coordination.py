"""SESSION_STORE=redis: one turn at a time per session across instances (see agent/coordination.py).

:class:`RedisCoordination` keeps a **per-session queue in Redis**: a
turn is admitted by one script that applies ``if_busy`` and appends ``{turn_id}|{instance}``
(so arrival order is global), and runs only when its entry heads the queue. We chose a queue over
a bare lease because a lease says who runs now but not who is next: with a lease, turns waiting
on two instances race for it and arrival order is lost. Liveness is a per-instance heartbeat key
(``msev15:instance:{id}``, TTL ``REDIS_LEASE_SECONDS``): an instance that finds the head entry's
owner expired removes it and ends that turn with ``turn_lost``, so a session held by a dead
instance is free again within one lease period (plus a second for the waiter to look). The head
entry is also the fencing token: a session commit is refused unless the turn still heads its
queue (store/redis_sessions.py), so an instance that lost its turn while paused cannot write.

Cancels travel on a pub/sub channel to the instance that owns the turn; waiters are woken on
another when a session's head changes (and look again every second, should a message be lost).

An entry can outlive its turn while its instance lives: Redis stalls, the admit times out (the
client gets 503 ``store_unavailable``), and Redis later runs the queued RPUSH; or a release fails
while Redis is down. Such an entry is an *orphan*: its owner is this instance, the local runner
does not hold its turn, and no admit of it is in flight. The owner sweeps its orphans wherever
it meets them (at the queue's head while waiting, when ``reject`` finds the session busy, and on
a session cancel, its own or one relayed from another instance; an instance that has waited a
recheck period behind another's entry asks that owner to look), so a stall never wedges a
session and a cancel frees it whatever its queue holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from msev15.agent.coordination import MAX_KEPT, RECHECK_SECONDS, NoHost, SessionHeld, TurnHost
from msev15.agent.runner import TurnRefused
from msev15.common.tasks import close_within, stop_task
from msev15.events.redis_turnlog import RedisTurnLog, RemoteTurnRecord, instance_key
from msev15.events.turnlog import TurnRecord, TurnView
from msev15.events.types import TurnRequested
from msev15.store.base import FencedOut
from msev15.store.redis_kit import connect, tenant_key, text, translated
from msev15.store.redis_wire import Script, wire

if TYPE_CHECKING:
    import redis.asyncio as aioredis

log = logging.getLogger("agent.coordination")

# (tenant_id, session_id) -> (a key, an argument) for the admit script: RedisSessions.hold_probe
# (the session's hash, its idle cutoff), RedisPendingCalls.paused_probe (its hash, a field)
HoldProbe = Callable[[str, str], tuple[str, str]]

CONTROL_CHANNEL = "msev15:control"
WAKE_CHANNEL = "msev15:wake"
QUEUE_TTL_SECONDS = 86_400
MAX_HEADS = MAX_KEPT
_FINAL = ("completed", "waiting", "failed", "cancelled", "interrupted")  # a turn that has ended

# KEYS: the session's queue [, the session's hash] [, the session's paused-step hash] [, the
# tenant's profile hash]; ARGV: entry, if_busy policy, queue TTL, the session cutoff ('' without a
# TTL; '-': no hold check, and no session hash among the KEYS), the paused-step hash's field that
# only a paused step has ('': no paused-step hash among the KEYS), '1' when the profile hash is the
# last key. With the session's hash, returns {'HELD', mode} and admits nothing when a person holds
# the live session (its mode is set and not 'agent'; see store/redis_sessions.py): the hold check
# and the admission are one step. Returns {'BUSY'} when a reject finds the session busy; else,
# after appending this one, {'HEAD'} when it heads the queue ({'FREE'}: heads it, and the session
# has no paused step: see RedisCoordination.unpaused) or {'QUEUED'}, then the tenant's current
# profile version ('' without the profile hash: see RedisCoordination.profile_version), then (for
# interrupt) the entries ahead.
_ADMIT = """
local k = 2
if ARGV[4] ~= '-' then
  local meta = redis.call('HMGET', KEYS[k], 'last_activity', 'mode')
  if meta[1] and meta[2] and meta[2] ~= 'agent'
      and (ARGV[4] == '' or tonumber(meta[1]) > tonumber(ARGV[4])) then
    return {'HELD', meta[2]}
  end
  k = k + 1
end
local ahead = redis.call('LRANGE', KEYS[1], 0, -1)
if ARGV[2] == 'reject' and #ahead > 0 then return {'BUSY'} end
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
local out = {'QUEUED', ''}
if #ahead == 0 then
  out[1] = 'HEAD'
  if ARGV[5] ~= '' and redis.call('HEXISTS', KEYS[k], ARGV[5]) == 0 then out[1] = 'FREE' end
end
if ARGV[6] == '1' then out[2] = redis.call('HGET', KEYS[#KEYS], 'current') or '0' end
if ARGV[2] == 'interrupt' then
  for _, entry in ipairs(ahead) do out[#out + 1] = entry end
end
return out
"""

# KEYS: the session's queue; ARGV: entry. Removes the entry if it is still the head.
_DROP_HEAD = """
if redis.call('LINDEX', KEYS[1], 0) == ARGV[1] then redis.call('LPOP', KEYS[1]) return 1 end
return 0
"""


def _entry(turn: TurnRequested, instance_id: str) -> str:
    return f"{turn.turn_id}|{instance_id}"


class RedisCoordination:
    across_instances = True

    def __init__(self, url: str, instance_id: str, turns: RedisTurnLog, lease_seconds: float) -> None:
        self.instance_id = instance_id
        self.runner: TurnHost = NoHost()
        self.turns = turns
        self.lease_seconds = lease_seconds
        self._redis: aioredis.Redis = connect(url)
        self._listener_client: aioredis.Redis = connect(url, socket_timeout=None)
        self._hot = wire(url, self._redis)  # the admit, on every turn's path (store/redis_wire.py)
        self._admit = Script(_ADMIT)
        self._drop_head = self._redis.register_script(_DROP_HEAD)
        self._waiters: dict[str, asyncio.Event] = {}
        self._admitting: set[str] = set()  # entries whose admit script may not have run yet
        # entries that headed their queue when admitted: when, and whether the session had no paused step
        self._heads: dict[str, tuple[float, bool]] = {}
        self._unpaused: set[str] = set()  # turns acquire found so (see unpaused)
        self._tasks: list[asyncio.Task[None]] = []
        # Set by the topology when the sessions are in this Redis: (the session's hash, the cutoff)
        # of a session, so the admit script reads its mode (see _ADMIT).
        self.hold_probe: HoldProbe | None = None
        # Set by the topology when the pending calls are in this Redis: (the session's paused-step
        # hash, the field only a paused step has), so the admit script tells a session without one.
        self.paused_probe: HoldProbe | None = None
        # Set by the topology when the tenants' profiles are in this Redis: a tenant's profile hash
        # (its 'current' field is the version), so the admit script reads it (see profile_version).
        self.profile_probe: Callable[[str], str] | None = None
        self._versions: dict[str, tuple[float, int]] = {}  # turn id -> (admitted at, profile version)

    @property
    def reads_hold(self) -> bool:
        return self.hold_probe is not None

    def unpaused(self, turn: TurnRequested) -> bool:
        """True (once) when the admit script found the session without a paused step while the
        turn took the head of its queue, and acquire took the turn within RECHECK_SECONDS of that
        (as it trusts the head). Only a running turn of the session pauses a step, and none runs
        while this one heads the queue, so the turn may skip its pending-calls look-up."""
        if turn.turn_id not in self._unpaused:
            return False
        self._unpaused.discard(turn.turn_id)
        return True

    def profile_version(self, turn: TurnRequested) -> int | None:
        """The tenant's current profile version as the admit script read it (once), when the turn
        asks within RECHECK_SECONDS of its admission (a turn starts a moment after it is admitted;
        one the local scheduler held longer reads it again); None: unknown, read it."""
        admitted = self._versions.pop(turn.turn_id, None)
        if admitted is None or time.monotonic() - admitted[0] >= RECHECK_SECONDS:
            return None
        return admitted[1]

    def context(self, turn: TurnRequested) -> list[dict[str, Any]] | None:
        return None  # the turn reads it (the session store holds its tail)

    def start(self, host: TurnHost) -> None:
        self.runner = host
        self._tasks = [asyncio.create_task(self._heartbeat(), name="agent:coordination-heartbeat"),
                       asyncio.create_task(self._listen(), name="agent:coordination-listener")]

    async def close(self) -> None:
        await asyncio.gather(*(stop_task(task) for task in self._tasks))
        with contextlib.suppress(Exception):
            await self._redis.delete(instance_key(self.instance_id))
        await close_within(self._redis.aclose(), "coordination's Redis client")
        await close_within(self._hot.aclose(), "coordination's hot-path Redis client")
        await close_within(self._listener_client.aclose(), "coordination's listener Redis client")

    # --- liveness and messages ----------------------------------------------------------

    async def _heartbeat(self) -> None:
        while True:
            try:
                await self._redis.set(instance_key(self.instance_id), "1", px=int(self.lease_seconds * 1000))
            except Exception as exc:
                log.warning("heartbeat failed: %s", type(exc).__name__)
            await asyncio.sleep(self.lease_seconds / 4)

    async def _listen(self) -> None:
        while True:
            try:
                async with self._listener_client.pubsub() as pubsub:
                    await pubsub.subscribe(CONTROL_CHANNEL, WAKE_CHANNEL)
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            await self._on_message(message["channel"], message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("coordination listener lost Redis (%s); reconnecting", type(exc).__name__)
                await asyncio.sleep(RECHECK_SECONDS)

    async def _on_message(self, channel: str, data: str) -> None:
        if channel == WAKE_CHANNEL:
            waiter = self._waiters.get(data)
            if waiter is not None:
                waiter.set()
            return
        order = json.loads(data)
        record = self.runner.open_record(order["turn_id"])
        if record is not None:
            if "reason" in order:
                self.runner.stop(record, order["reason"])
        elif "queue" in order:  # a turn this instance does not hold (anymore): sweep its orphans there
            try:
                await self._sweep(order["queue"])
            except Exception as exc:
                log.warning("could not sweep a session queue (%s)", type(exc).__name__)

    # --- orphans: entries of this instance whose turn it does not hold ------------------------

    def _orphan(self, entry: str) -> bool:
        turn_id, _, owner = entry.partition("|")
        return owner == self.instance_id and entry not in self._admitting and self.runner.open_record(turn_id) is None

    async def _sweep(self, queue: str) -> int:
        """Remove this instance's orphan entries from a session's queue; how many were removed."""
        orphans = [e for e in map(text, await self._redis.lrange(queue, 0, -1)) if self._orphan(e)]
        if not orphans:
            return 0
        async with self._redis.pipeline(transaction=True) as pipe:
            for entry in orphans:
                pipe.lrem(queue, 1, entry)
            pipe.publish(WAKE_CHANNEL, queue)
            await pipe.execute()
        log.warning("freed %d queue entries of session queue %s left by requests that gave up", len(orphans), queue)
        return len(orphans)

    # --- one turn at a time per session -------------------------------------------------------

    @translated
    async def admit(self, turn: TurnRequested, hold: bool = False) -> None:
        queue = tenant_key(turn.tenant_id, "queue", turn.session_id)
        entry = _entry(turn, self.instance_id)
        keys: list[str] = [queue]
        args: list[str | int] = [entry, turn.if_busy, QUEUE_TTL_SECONDS, "-", "", ""]
        if hold and self.hold_probe is not None:
            meta, args[3] = self.hold_probe(turn.tenant_id, turn.session_id)
            keys.append(meta)
        if self.paused_probe is not None and turn.resumes is None:
            paused, args[4] = self.paused_probe(turn.tenant_id, turn.session_id)
            keys.append(paused)
        if self.profile_probe is not None:
            keys.append(self.profile_probe(turn.tenant_id))
            args[5] = "1"
        self._admitting.add(entry)
        try:
            ahead = await self._hot.run(self._admit, keys, args)
            if ahead == ["BUSY"] and await self._sweep(queue):
                ahead = await self._hot.run(self._admit, keys, args)
        finally:
            self._admitting.discard(entry)
        if ahead and text(ahead[0]) == "HELD":
            raise SessionHeld(text(ahead[1]))
        if ahead == ["BUSY"]:
            raise TurnRefused("session_busy", "This session is still answering an earlier message.", 409,
                              retry_after=self.runner.busy_retry_after)
        if text(ahead[0]) in ("HEAD", "FREE"):
            if len(self._heads) >= MAX_HEADS:  # turns stopped before they ran never took theirs
                self._heads.clear()
            self._heads[entry] = (time.monotonic(), text(ahead[0]) == "FREE")
        if ahead[1] != "":
            if len(self._versions) >= MAX_HEADS:
                self._versions.clear()
            self._versions[turn.turn_id] = (time.monotonic(), int(ahead[1]))
        for entry in map(text, ahead[2:]):  # if_busy=interrupt: stop what was ahead, wherever it runs
            turn_id, _, owner = entry.partition("|")
            if owner != self.instance_id:
                await self._redis.publish(CONTROL_CHANNEL, json.dumps({"turn_id": turn_id, "reason": "interrupted"}))

    @translated
    async def withdraw(self, turn: TurnRequested) -> None:
        await self._remove(turn)

    async def _remove(self, turn: TurnRequested) -> None:
        self._heads.pop(_entry(turn, self.instance_id), None)
        queue = tenant_key(turn.tenant_id, "queue", turn.session_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.lrem(queue, 1, _entry(turn, self.instance_id))
            pipe.publish(WAKE_CHANNEL, queue)
            await pipe.execute()

    @translated
    async def acquire(self, turn: TurnRequested) -> str | None:
        queue = tenant_key(turn.tenant_id, "queue", turn.session_id)
        mine = _entry(turn, self.instance_id)
        admitted = self._heads.pop(mine, None)
        if admitted is not None and time.monotonic() - admitted[0] < RECHECK_SECONDS:
            # It headed the queue when admitted a moment ago, and nothing is ever added ahead of an
            # entry: no look needed (the commit is fenced all the same).
            if admitted[1]:
                if len(self._unpaused) >= MAX_HEADS:
                    self._unpaused.clear()
                self._unpaused.add(turn.turn_id)
            return mine
        waiter = self._waiters.setdefault(queue, asyncio.Event())
        try:
            while True:
                waiter.clear()
                raw_head = await self._redis.lindex(queue, 0)
                head = None if raw_head is None else text(raw_head)
                if head == mine:
                    return mine
                if head is None or mine not in [text(e) for e in await self._redis.lrange(queue, 0, -1)]:
                    raise FencedOut("this turn lost its place in the session's queue")
                turn_id, _, owner = head.partition("|")
                if owner != self.instance_id and not await self.turns.owner_alive(owner):
                    await self._take_over(queue, head, turn.tenant_id, turn.session_id, turn_id)
                    continue
                if self._orphan(head) and await self._drop_head(keys=[queue], args=[head]):
                    log.warning("freed session queue %s from an entry left by a request that gave up", queue)
                    continue
                try:
                    await asyncio.wait_for(waiter.wait(), RECHECK_SECONDS)
                except TimeoutError:  # a long wait: the head's owner may hold no such turn; ask it to look
                    if owner != self.instance_id:
                        await self._redis.publish(CONTROL_CHANNEL, json.dumps({"turn_id": turn_id, "queue": queue}))
        finally:  # one waiter per session at a time: the local scheduler runs a session's turns in turn
            self._waiters.pop(queue, None)

    async def _take_over(self, queue: str, head: str, tenant_id: str, session_id: str, turn_id: str) -> None:
        """The head's instance is gone: end its turn (turn_lost) and free the session."""
        if await self._drop_head(keys=[queue], args=[head]):
            remote = await self.turns.find(tenant_id, session_id, turn_id)
            if isinstance(remote, RemoteTurnRecord) and remote.status not in _FINAL:
                await self.turns.mark_lost(remote)
            await self._redis.publish(WAKE_CHANNEL, queue)

    async def release(self, turn: TurnRequested) -> None:
        """Free the session: sent with the turn's terminal event (one pipeline), retried with it;
        an entry left by a Redis outage is an orphan, swept as above."""
        self._heads.pop(_entry(turn, self.instance_id), None)
        self.turns.writer.release(tenant_key(turn.tenant_id, "queue", turn.session_id),
                                  _entry(turn, self.instance_id), WAKE_CHANNEL)

    # --- cancel from any instance ------------------------------------------------------------

    @translated
    async def cancel(self, record: TurnView, reason: str) -> bool:
        if isinstance(record, TurnRecord):
            return self.runner.stop(record, reason)
        if record.status in _FINAL:
            return False
        await self._redis.publish(CONTROL_CHANNEL, json.dumps({"turn_id": record.turn_id, "reason": reason}))
        return True

    @translated
    async def cancel_session(self, tenant_id: str, session_id: str, reason: str) -> int:
        queue = tenant_key(tenant_id, "queue", session_id)
        await self._sweep(queue)
        entries = [text(e) for e in await self._redis.lrange(queue, 0, -1)]
        for entry in entries:
            turn_id, _, owner = entry.partition("|")
            record = self.runner.open_record(turn_id) if owner == self.instance_id else None
            if record is not None:
                self.runner.stop(record, reason)
            else:  # the owner stops it, or sweeps it if it holds no such turn (a dead owner's: see acquire)
                await self._redis.publish(CONTROL_CHANNEL, json.dumps({"turn_id": turn_id, "reason": reason,
                                                                       "queue": queue}))
        return len(entries)

    @translated
    async def session_turn(self, tenant_id: str, session_id: str) -> TurnView | None:
        """The first entry of the session's queue that is still open: the queue's head runs (or is
        about to), whichever instance holds it. An entry whose turn ended, or whose record is not
        written yet, is passed over."""
        for entry in [text(e) for e in await self._redis.lrange(tenant_key(tenant_id, "queue", session_id), 0, -1)]:
            turn_id, _, owner = entry.partition("|")
            record: TurnView | None
            if owner == self.instance_id:
                record = self.runner.open_record(turn_id)
            else:
                record = await self.turns.find(tenant_id, session_id, turn_id)
            if record is not None and not record.finished:
                return record
        return None
