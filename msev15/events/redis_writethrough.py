"""Write-through of a turn's events to the shared log: no reader sees an event before Redis has it.

The rule that makes resume exact across instances: an event becomes visible to readers (on this
instance too, and to the JSON answer that waits for the end) only once it is in the turn's Redis
stream. A client therefore never holds an id the shared log lacks, and the ``turn_lost`` another
instance writes after this one died is always numbered past every id a client holds.

The runner's ``append`` is still synchronous and never waits: the event goes to the record's
``unsent`` list and to the writer's queue. One writer task sends everything queued since its last
write in one pipeline (so a burst of tokens costs one round trip, not one each), then releases
the written events to readers. Writes are idempotent scripts: a write the client gave up on (a
stalled Redis) that Redis executes later is skipped when it is sent again, so a retry never
duplicates or reorders events. A turn another instance has declared lost (``lost`` on its hash)
refuses further events; the owner then releases what the shared log holds, ``turn_lost``
included, so every reader of the turn sees the same single end.

While Redis fails, the rule is relaxed for this instance only: after a failed attempt the batch is
released to the readers here (they must not wait out an outage; the turn usually fails with
``store_unavailable`` meanwhile) while the writer keeps retrying it, in order, so the shared log
is complete again once Redis answers. Writes still failing after the retries are dropped and
counted in ``write_failures``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import redis.exceptions

from msev15.common.tasks import stop_task
from msev15.events.turnlog import STOPPED, TurnRecord, completed_status
from msev15.events.types import TurnCompleted, TurnEvent, TurnFailed, TurnRequested
from msev15.store.redis_wire import Script

if TYPE_CHECKING:
    from msev15.store.redis_wire import Arg, HotPath

log = logging.getLogger("events.redis")

WRITE_ATTEMPTS = 8
MAX_BATCH = 500

# KEYS: meta[, the tenant's task index]. ARGV: tenant, session, request id, owner, running TTL[,
# turn id, opened at (ms), index cap]. Creates the turn's hash once: a retried open never resets a
# turn that has moved on. The index (a sorted set of the tenant's turn ids by opening time, the
# newest ``cap`` kept, expiring with the last turn's running TTL) lets any instance list the
# tenant's turns (A2A ListTasks); an id whose hash expired is passed over when read.
OPEN_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'tenant_id', ARGV[1], 'session_id', ARGV[2], 'request_id', ARGV[3],
           'owner', ARGV[4], 'status', 'queued', 'last_seq', 0)
redis.call('EXPIRE', KEYS[1], ARGV[5])
if #KEYS > 1 then
  redis.call('ZADD', KEYS[2], ARGV[7], ARGV[6])
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -(tonumber(ARGV[8]) + 1))
  redis.call('EXPIRE', KEYS[2], ARGV[5])
end
return 1
"""

# KEYS: meta. Marks the turn running unless it has ended (or was declared lost) meanwhile.
START_SCRIPT = """
if redis.call('HGET', KEYS[1], 'status') == 'queued' then redis.call('HSET', KEYS[1], 'status', 'running') end
return 1
"""

# KEYS: meta, stream. ARGV: first seq, final status or '', error or '', message count or '',
# profile version or '', retention TTL, running TTL, stream cap, then the events' JSON in seq order. Adds the events not
# yet in the stream (a retried write skips what an earlier attempt wrote); returns the last seq
# stored, or -1 when another instance declared the turn lost (nothing is written then).
EVENTS_SCRIPT = """
if redis.call('HEXISTS', KEYS[1], 'lost') == 1 then return -1 end
local last = tonumber(redis.call('HGET', KEYS[1], 'last_seq') or '0')
local seq = tonumber(ARGV[1])
for i = 9, #ARGV do
  if seq > last then
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[8], seq .. '-0', 'e', ARGV[i])
    last = seq
  end
  seq = seq + 1
end
redis.call('HSET', KEYS[1], 'last_seq', last)
if ARGV[2] ~= '' then
  redis.call('HSET', KEYS[1], 'status', ARGV[2])
  if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'error', ARGV[3]) end
  if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'message_count', ARGV[4]) end
  if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'profile_version', ARGV[5]) end
  redis.call('EXPIRE', KEYS[1], ARGV[6])
  redis.call('EXPIRE', KEYS[2], ARGV[6])
else
  redis.call('EXPIRE', KEYS[2], ARGV[7])
end
return last
"""


# KEYS: a session's turn queue. ARGV: the entry, the wake channel. A turn's release, sent in the
# same pipeline as its terminal event: the session is free by the time a client sees the end.
# Waiters are woken only when the queue still holds entries: a turn waits only while its own entry
# is queued, so an empty queue has no waiter (and every instance's listener would otherwise parse
# a message for every turn of the fleet).
RELEASE_SCRIPT = """
redis.call('LREM', KEYS[1], 1, ARGV[1])
if redis.call('LLEN', KEYS[1]) > 0 then redis.call('PUBLISH', ARGV[2], KEYS[1]) end
return 1
"""


class SharedTurnRecord(TurnRecord):
    """A turn run here: ``events`` holds what is in Redis (what readers may see), ``unsent`` the
    rest, in order. ``fenced`` once another instance declared the turn lost. ``opened_at`` (wall
    clock) orders the tenant's task index."""

    __slots__ = ("unsent", "fenced", "opened_at")

    def __init__(self, turn: TurnRequested) -> None:
        super().__init__(turn)
        self.unsent: list[TurnEvent] = []
        self.fenced = False
        self.opened_at = time.time()

    @property
    def next_seq(self) -> int:
        return len(self.events) + len(self.unsent) + 1


# One queued write: ("open" | "start", record, []), ("events", record, [(seq, event), ...]) or
# ("release", (queue key, entry, wake channel), []).
Write = tuple[str, Any, list[tuple[int, TurnEvent]]]


class TurnWriter:
    """The owner's side of the shared log: queue, batch, write, then release to readers.

    ``keys_of(record)`` names the turn's hash and stream; ``encode`` serializes an event;
    ``release(record, event)`` makes a written event visible (the turn log's own append);
    ``adopt(record)`` is awaited when the turn was fenced, to release what Redis holds.
    """

    def __init__(self, client: HotPath, instance_id: str, retention_seconds: float, running_ttl: int,
                 stream_maxlen: int, keys_of: Callable[[TurnRecord], tuple[str, str]],
                 encode: Callable[[TurnEvent], str], release: Callable[[TurnRecord, TurnEvent], object]) -> None:
        self._redis = client
        self.instance_id = instance_id
        self._retention = max(1, int(retention_seconds))
        self._running_ttl = running_ttl
        self._maxlen = stream_maxlen
        self._keys_of = keys_of
        self._encode = encode
        self._release = release
        self._scripts = {name: Script(source) for name, source in (
            ("open", OPEN_SCRIPT), ("start", START_SCRIPT), ("events", EVENTS_SCRIPT), ("release", RELEASE_SCRIPT))}
        self._pending: deque[Write] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self.write_failures = 0
        self.round_trips = 0
        self.adopt: Callable[[SharedTurnRecord], Any] | None = None
        # the tenant's task index and its cap, for a turn (see OPEN_SCRIPT); None: no index
        self.index_of: Callable[[SharedTurnRecord], tuple[str, int]] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="events:redis-turnlog-writer")

    async def stop(self) -> None:
        await stop_task(self._task)

    def queue(self, kind: str, record: SharedTurnRecord, event: TurnEvent | None = None) -> None:
        if event is None:
            self._pending.append((kind, record, []))
        else:
            record.unsent.append(event)
            last = self._pending[-1] if self._pending else None
            seq = record.next_seq - 1
            if last is not None and last[0] == "events" and last[1] is record:
                last[2].append((seq, event))  # the same turn's next event: one script call for both
            else:
                self._pending.append(("events", record, [(seq, event)]))
        self._idle.clear()
        self._wake.set()

    def release(self, queue: str, entry: str, channel: str) -> None:
        """Remove a turn's queue entry and wake the session's waiters, with the next write (the
        turn's terminal event, queued just before: one round trip for both)."""
        self._pending.append(("release", (queue, entry, channel), []))
        self._idle.clear()
        self._wake.set()

    async def flush(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def _loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch = [self._pending.popleft() for _ in range(min(len(self._pending), MAX_BATCH))]
                await self._write(batch)
            self._idle.set()

    async def _write(self, batch: list[Write]) -> None:
        delay = 0.05
        for _attempt in range(WRITE_ATTEMPTS):
            try:
                results = await self._send(batch)
            except redis.exceptions.NoScriptError:
                await self._load_scripts()
                continue
            except Exception as exc:
                log.warning("turn log write failed (%s); retrying", type(exc).__name__)
                while self._pending:  # what was queued meanwhile is retried with it, in order
                    batch.append(self._pending.popleft())
                self._release_batch(batch)  # readers here do not wait out an outage (see the docstring)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            for (kind, record, events), result in zip(batch, results, strict=True):
                if kind == "events":
                    await self._settle(record, events, result)
            return
        self.write_failures += len(batch)
        log.error("turn log: %d writes not in Redis (unavailable); released on this instance only", len(batch))

    def _release_batch(self, batch: list[Write]) -> None:
        for kind, record, events in batch:
            if kind == "events":
                for _seq, event in events:
                    self._take(record, event)

    async def _send(self, batch: list[Write]) -> list[Any]:
        commands: list[list[Arg]] = []
        for kind, record, events in batch:
            if kind == "release":
                queue, entry, channel = record
                commands.append(self._scripts["release"].command([queue], [entry, channel]))
                continue
            meta, stream = self._keys_of(record)
            if kind == "open":
                args: list[Arg] = [record.tenant_id, record.session_id, record.request_id, self.instance_id,
                                   self._running_ttl]
                if self.index_of is None:
                    commands.append(self._scripts["open"].command([meta], args))
                else:
                    index, cap = self.index_of(record)
                    commands.append(self._scripts["open"].command(
                        [meta, index], [*args, record.turn_id, int(record.opened_at * 1000), cap]))
            elif kind == "start":
                commands.append(self._scripts["start"].command([meta], []))
            else:
                commands.append(self._scripts["events"].command(
                    [meta, stream], [events[0][0], *self._end_fields(events), self._retention, self._running_ttl,
                                     self._maxlen, *(self._encode(event) for _, event in events)]))
        self.round_trips += 1
        results = await self._redis.batch(commands)
        for result in results:
            if isinstance(result, Exception):
                raise result  # NoScriptError: Redis restarted and forgot the scripts (see _write)
        return results

    @staticmethod
    def _end_fields(events: list[tuple[int, TurnEvent]]) -> tuple[str, str, str, str]:
        last = events[-1][1]
        if isinstance(last, TurnCompleted):
            return completed_status(last), "", str(last.message_count), str(last.profile_version)
        if isinstance(last, TurnFailed):
            return STOPPED.get(last.error, "failed"), last.error, "", str(last.profile_version)
        return "", "", "", ""

    async def _load_scripts(self) -> None:
        for script in self._scripts.values():
            await self._redis.load(script)

    async def _settle(self, record: SharedTurnRecord, events: list[tuple[int, TurnEvent]], result: Any) -> None:
        if int(result) >= 0:
            for _seq, event in events:
                self._take(record, event)
            return
        if not record.fenced:  # another instance ended this turn (turn_lost): show its end, not ours
            record.fenced = True
            record.unsent.clear()
            log.warning("turn %s was declared lost by another instance; its events stop here", record.turn_id)
            if self.adopt is not None:
                await self.adopt(record)

    def _take(self, record: SharedTurnRecord, event: TurnEvent) -> None:
        """Release ``event`` to readers, once (events are taken in order, so it heads ``unsent``
        unless it was released already: by a failed attempt, or never, once fenced)."""
        if record.fenced or record.finished or not record.unsent or record.unsent[0] is not event:
            return
        record.unsent.pop(0)
        self._release(record, event)
