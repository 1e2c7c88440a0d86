"""The turn log shared by every instance, on Redis Streams.

The instance that runs a turn keeps its record in memory (readers on that instance follow it
there, as with one process) and writes it through to Redis: a hash of the turn's identity and
status and a stream of its events with ids ``{seq}-0``. An event is in the stream before any
reader, here or elsewhere, sees it (events/redis_writethrough.py: batched per write, so the token
path stays a list append). A reader on another instance gets a :class:`RemoteTurnRecord` with the
same reading interface, which replays the stream with XRANGE and follows it with XREAD BLOCK: so
``Last-Event-ID`` resume works from any instance, each event is seen once, and no client holds an
id the stream lacks.

A turn whose instance died never gets its terminal event from it: a remote reader that waits
past a block checks the owner's heartbeat, and once it has expired writes the terminal event
itself (``error: turn_lost``), in one script that first checks that the turn has not ended, so
every reader sees exactly one terminal event. Streams are capped (MAXLEN) and expire
STREAM_RETENTION_SECONDS after the turn ends (a day at most while it runs).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from msev15.common.tasks import close_within
from msev15.events.redis_writethrough import SharedTurnRecord, TurnWriter
from msev15.events.turnlog import STOPPED, TurnLog, TurnRecord, TurnStatus, TurnView, completed_status
from msev15.events.types import (
    Handoff,
    InputRequired,
    Token,
    ToolCalled,
    ToolFinished,
    TurnCompleted,
    TurnEvent,
    TurnFailed,
    TurnRequested,
)
from msev15.store.redis_kit import connect, tenant_key, text, text_map, translated
from msev15.store.redis_wire import wire

log = logging.getLogger("events.redis")

STREAM_MAXLEN = 20_000
RUNNING_TTL_SECONDS = 86_400
READ_BLOCK_MS = 1000
TASK_INDEX_CAP = 1000  # the newest turns per tenant that ListTasks finds on every instance
TURN_LOST_MESSAGE = "The instance running this turn stopped before it finished. Please retry."

_KINDS: dict[str, type[TurnEvent]] = {k.__name__: k for k in (Token, ToolCalled, ToolFinished, InputRequired,
                                                                Handoff, TurnCompleted, TurnFailed)}
_FINAL = ("completed", "waiting", "with_human", "failed", "cancelled", "interrupted")

# KEYS: meta, stream; ARGV: terminal event JSON, retention seconds. Ends a turn whose owner died,
# unless it has ended already; returns 1 when it wrote the terminal event.
_MARK_LOST = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status or status == 'completed' or status == 'waiting' or status == 'failed' or status == 'cancelled'
   or status == 'interrupted' then return 0 end
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
local seq = 1
if #last > 0 then seq = tonumber(string.match(last[1][1], '^(%d+)')) + 1 end
redis.call('XADD', KEYS[2], seq .. '-0', 'e', ARGV[1])
redis.call('HSET', KEYS[1], 'status', 'failed', 'error', 'turn_lost', 'last_seq', seq, 'lost', '1')
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
return 1
"""


_IDENTITY = ("turn_id", "tenant_id", "session_id", "request_id")
# The fields stored per event: not the turn's identity, which its keys and hash already hold.
_STORED = {kind: tuple(f.name for f in dataclasses.fields(kind) if f.name not in _IDENTITY)
           for kind in _KINDS.values()}


def encode_event(event: TurnEvent) -> str:
    """One stream entry's JSON: the kind and the fields beyond the turn's identity (a shallow read:
    ``dataclasses.asdict`` deep-copies, which cost a tenth of a streamed turn's CPU)."""
    kind = type(event)
    fields: dict[str, object] = {"k": kind.__name__}
    for name in _STORED[kind]:
        fields[name] = getattr(event, name)
    return json.dumps(fields, separators=(",", ":"))


def decode_event(raw: str, turn: TurnView) -> TurnEvent:
    """The event of ``turn``'s stream entry (entries that also hold the identity read the same)."""
    fields = json.loads(raw)
    kind = _KINDS[fields.pop("k")]
    for name in _IDENTITY:
        fields.setdefault(name, getattr(turn, name))
    return kind(**fields)


def _keys(tenant_id: str, turn_id: str) -> tuple[str, str]:
    return tenant_key(tenant_id, "turn", turn_id), tenant_key(tenant_id, "turnlog", turn_id)


def instance_key(instance_id: str) -> str:
    return f"msev15:instance:{instance_id}"


class RedisTurnLog(TurnLog):
    """The local turn log, mirrored to Redis, plus remote reads (``find``)."""

    def __init__(self, url: str, instance_id: str, retention_seconds: float, max_retained_events: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(retention_seconds, max_retained_events, clock)
        self.instance_id = instance_id
        self._redis = connect(url)
        self._blocking = connect(url, socket_timeout=READ_BLOCK_MS / 1000 + 5)
        self._mark_lost = self._redis.register_script(_MARK_LOST)
        self._hot = wire(url, self._redis)  # the writer's batches, on every turn's path (store/redis_wire.py)
        self.writer = TurnWriter(self._hot, instance_id, retention_seconds, RUNNING_TTL_SECONDS, STREAM_MAXLEN,
                                 lambda record: _keys(record.tenant_id, record.turn_id), encode_event,
                                 super().append)
        self.writer.adopt = self._adopt_end
        self.writer.index_of = lambda record: (tenant_key(record.tenant_id, "tasks"), TASK_INDEX_CAP)

    # --- the owner's side: write-through (events/redis_writethrough.py) -------------------

    @property
    def write_failures(self) -> int:
        return self.writer.write_failures

    def start(self) -> None:
        self.writer.start()

    def open(self, turn: TurnRequested) -> TurnRecord:
        self._expire()
        record = self._turns[turn.turn_id] = SharedTurnRecord(turn)
        self.writer.queue("open", record)
        return record

    def started(self, record: TurnRecord) -> None:
        super().started(record)
        assert isinstance(record, SharedTurnRecord)
        self.writer.queue("start", record)

    def append(self, record: TurnRecord, event: TurnEvent) -> int:
        """Queue the event for Redis; readers see it once it is there. Returns its seq."""
        assert isinstance(record, SharedTurnRecord)
        if record.fenced:  # declared lost elsewhere: its end is already in the shared log
            return record.next_seq
        seq = record.next_seq
        self.writer.queue("events", record, event)
        return seq

    async def _adopt_end(self, record: SharedTurnRecord) -> None:
        """The turn was declared lost by another instance: release what the shared log holds."""
        _, stream = _keys(record.tenant_id, record.turn_id)
        try:
            entries: Any = await self._redis.xrange(stream, f"{len(record.events) + 1}-0", "+")
        except Exception as exc:
            log.warning("could not read the end of lost turn %s (%s)", record.turn_id, type(exc).__name__)
            return
        for _entry_id, fields in entries:
            event = decode_event(text(fields["e"]), record)
            if not record.finished:
                super().append(record, event)

    async def flush(self, timeout: float) -> bool:
        """Wait until every queued write reached Redis (or gave up); True if done in time."""
        return await self.writer.flush(timeout)

    async def close(self) -> None:
        await self.flush(2.0)
        await self.writer.stop()
        await close_within(self._hot.aclose(), "the turn log's hot-path Redis client")
        await close_within(self._redis.aclose(), "the turn log's Redis client")
        await close_within(self._blocking.aclose(), "the turn log's blocking Redis client")

    # --- any instance's side -------------------------------------------------------------

    async def find(self, tenant_id: str, session_id: str, turn_id: str) -> TurnView | None:
        local = self.get(tenant_id, session_id, turn_id)
        if local is not None:
            return local
        return await self._remote(tenant_id, session_id, turn_id)

    async def find_task(self, tenant_id: str, turn_id: str) -> TurnView | None:
        local = await super().find_task(tenant_id, turn_id)
        if local is not None:
            return local
        return await self._remote(tenant_id, None, turn_id)

    @translated
    async def _remote(self, tenant_id: str, session_id: str | None, turn_id: str) -> RemoteTurnRecord | None:
        meta_key, _ = _keys(tenant_id, turn_id)
        meta = text_map(await self._redis.hgetall(meta_key))
        if not meta or meta.get("tenant_id") != tenant_id or session_id not in (None, meta.get("session_id")):
            return None
        record = RemoteTurnRecord(self, turn_id, meta)
        if record.status not in _FINAL and not await self.owner_alive(record.owner) and await self.mark_lost(record):
            record = RemoteTurnRecord(self, turn_id, text_map(await self._redis.hgetall(meta_key)))
        return record

    @translated
    async def tasks(self, tenant_id: str) -> list[TurnView]:
        """This tenant's turns on every instance, newest first: the tenant's task index (written
        when a turn opens, the newest TASK_INDEX_CAP kept), each turn run elsewhere read in one
        pipeline with its last event; turns this instance opened while Redis failed come last."""
        local = self.retained(tenant_id)
        here = {record.turn_id: record for record in local}
        newest: Any = await self._redis.zrevrange(tenant_key(tenant_id, "tasks"), 0, TASK_INDEX_CAP - 1)
        ids = [text(i) for i in newest]
        remote = [turn_id for turn_id in ids if turn_id not in here]
        found: dict[str, TurnView] = {}
        if remote:
            async with self._redis.pipeline(transaction=False) as pipe:
                for turn_id in remote:
                    meta_key, stream = _keys(tenant_id, turn_id)
                    pipe.hgetall(meta_key)
                    pipe.xrevrange(stream, "+", "-", count=1)
                replies = await pipe.execute()
            for turn_id, raw, last in zip(remote, replies[::2], replies[1::2], strict=True):
                meta = text_map(raw)
                if meta and meta.get("tenant_id") == tenant_id:  # an expired turn is passed over
                    found[turn_id] = RemoteTurnRecord.listed(self, turn_id, meta, last)
        views: list[TurnView] = [view for turn_id in ids if (view := here.get(turn_id) or found.get(turn_id))]
        listed = set(ids)
        return views + [record for record in reversed(local) if record.turn_id not in listed]

    async def owner_alive(self, owner: str) -> bool:
        return bool(await self._redis.exists(instance_key(owner)))

    async def mark_lost(self, record: RemoteTurnRecord) -> bool:
        meta, stream = _keys(record.tenant_id, record.turn_id)
        event = TurnFailed(record.turn_id, record.tenant_id, record.session_id, record.request_id, "turn_lost",
                           TURN_LOST_MESSAGE, 503)
        wrote = await self._mark_lost(keys=[meta, stream],
                                      args=[encode_event(event), max(1, int(self.retention_seconds))])
        if wrote:
            log.warning("turn %s lost with its instance %s", record.turn_id, record.owner)
        return bool(wrote)


class RemoteTurnRecord(TurnView):
    """A turn run by another instance, read from Redis. The reading interface of TurnRecord."""

    def __init__(self, log_: RedisTurnLog, turn_id: str, meta: dict[str, str]) -> None:
        self._log = log_
        self.turn_id = turn_id
        self.tenant_id = meta["tenant_id"]
        self.session_id = meta["session_id"]
        self.request_id = meta.get("request_id", "-")
        self.owner = meta.get("owner", "")
        self.status: TurnStatus = meta.get("status", "queued")  # type: ignore[assignment]
        self.error = meta.get("error")
        self.message_count = int(meta["message_count"]) if "message_count" in meta else None
        self._meta_last_seq = int(meta.get("last_seq", 0))
        self.events: list[TurnEvent] = []
        self._last_id = "0-0"
        self.finished_at: float | None = None
        # from the meta hash (written with the terminal event), or the terminal event itself
        self.profile_version: int | None = int(meta["profile_version"]) if "profile_version" in meta else None
        self._partial = False  # holds its last event only (listed): catch_up reads from the start

    @classmethod
    def listed(cls, log_: RedisTurnLog, turn_id: str, meta: dict[str, str], last: Any) -> RemoteTurnRecord:
        """The turn as a list shows it: identity and status from its hash, and its last event when
        that ends it (the task's final status); ``catch_up`` reads the rest."""
        record = cls(log_, turn_id, meta)
        if last and isinstance(decode_event(text(last[0][1]["e"]), record), TurnCompleted | TurnFailed):
            record._take(last)
            record._partial = True
        return record

    @property
    def last_seq(self) -> int:
        return max(len(self.events), self._meta_last_seq)

    def _take(self, entries: Any) -> None:
        for entry_id, fields in entries:
            event = decode_event(text(fields["e"]), self)
            self.events.append(event)
            self._last_id = text(entry_id)
            if isinstance(event, TurnCompleted | TurnFailed):
                self.finished_at = time.monotonic()
                self.profile_version = event.profile_version
                if isinstance(event, TurnCompleted):
                    self.status, self.message_count = completed_status(event), event.message_count
                else:
                    self.status, self.error = STOPPED.get(event.error, "failed"), event.error
                return

    @translated
    async def catch_up(self) -> None:
        if self._partial:
            self._partial = False
            self.events, self._last_id, self.finished_at = [], "0-0", None
        if self.finished_at is None:
            _, stream = _keys(self.tenant_id, self.turn_id)
            start = "-" if self._last_id == "0-0" else f"({self._last_id}"
            self._take(await self._log._redis.xrange(stream, start, "+"))

    @translated
    async def wait(self, after: int) -> None:
        """Return once there is an event past seq ``after`` or the turn has ended."""
        _, stream = _keys(self.tenant_id, self.turn_id)
        if not self.events and self._last_id == "0-0":
            self._take(await self._log._redis.xrange(stream, "-", "+"))
        while len(self.events) <= after and self.finished_at is None:
            found: Any = await self._log._blocking.xread({stream: self._last_id}, block=READ_BLOCK_MS, count=1000)
            if found:
                self._take(found[0][1])  # [(stream, entries)]
                continue
            if not await self._log.owner_alive(self.owner):
                await self._log.mark_lost(self)

