"""The turn log shared by every instance, on Redis Streams.

The instance that runs a turn keeps its record in memory (readers on that instance follow it
there, as with one process) and mirrors it to Redis: a hash of the turn's identity and status and
a stream of its events with ids ``{seq}-0``, written in publish order by one writer task
(pipelined, so the token path stays a list append). A reader on another instance gets a
:class:`RemoteTurnRecord` with the same reading interface, which replays the stream with XRANGE
and follows it with XREAD BLOCK: so ``Last-Event-ID`` resume works from any instance and each event
is seen once.

A turn whose instance died never gets its terminal event from it: a remote reader that waits
past a block checks the owner's heartbeat, and once it has expired writes the terminal event
itself (``error: turn_lost``), in one script that first checks that the turn has not ended, so
every reader sees exactly one terminal event. Streams are capped (MAXLEN) and expire
STREAM_RETENTION_SECONDS after the turn ends (a day at most while it runs).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from msev15.events.turnlog import STOPPED, TurnLog, TurnRecord, TurnStatus, TurnView, completed_status
from msev15.events.types import (
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

log = logging.getLogger("events.redis")

STREAM_MAXLEN = 20_000
RUNNING_TTL_SECONDS = 86_400
READ_BLOCK_MS = 1000
TURN_LOST_MESSAGE = "The instance running this turn stopped before it finished. Please retry."

_KINDS: dict[str, type[TurnEvent]] = {k.__name__: k for k in (Token, ToolCalled, ToolFinished, InputRequired,
                                                                TurnCompleted, TurnFailed)}
_FINAL = ("completed", "waiting", "failed", "cancelled", "interrupted")

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
redis.call('HSET', KEYS[1], 'status', 'failed', 'error', 'turn_lost', 'last_seq', seq)
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
return 1
"""


def encode_event(event: TurnEvent) -> str:
    return json.dumps({"k": type(event).__name__, **dataclasses.asdict(event)}, separators=(",", ":"))


def decode_event(raw: str) -> TurnEvent:
    fields = json.loads(raw)
    kind = _KINDS[fields.pop("k")]
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
        self._pending: deque[tuple[str, tuple[Any, ...]]] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._writer: asyncio.Task[None] | None = None
        self.write_failures = 0

    # --- the owner's side ---------------------------------------------------------------

    def start(self) -> None:
        self._writer = asyncio.create_task(self._write_loop(), name="events:redis-turnlog-writer")

    def _queue(self, op: str, *args: Any) -> None:
        self._pending.append((op, args))
        self._idle.clear()
        self._wake.set()

    def open(self, turn: TurnRequested) -> TurnRecord:
        record = super().open(turn)
        self._queue("open", record)
        return record

    def started(self, record: TurnRecord) -> None:
        super().started(record)
        self._queue("status", record, "running")

    def append(self, record: TurnRecord, event: TurnEvent) -> int:
        seq = super().append(record, event)
        self._queue("event", record, seq, event)
        return seq

    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch = [self._pending.popleft() for _ in range(min(len(self._pending), 500))]
                await self._write(batch)
            self._idle.set()

    async def _write(self, batch: list[tuple[str, tuple[Any, ...]]]) -> None:
        delay = 0.05
        for _attempt in range(8):
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for op, args in batch:
                        self._add(pipe, op, args)
                    results = await pipe.execute(raise_on_error=False)
                for result in results:
                    if isinstance(result, Exception):  # e.g. an id already taken by turn_lost
                        log.warning("turn log write refused: %s", result)
                return
            except Exception as exc:
                log.warning("turn log write failed (%s); retrying", type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        self.write_failures += len(batch)
        log.error("dropped %d turn log writes: Redis unavailable", len(batch))

    def _add(self, pipe: Any, op: str, args: tuple[Any, ...]) -> None:
        record: TurnRecord = args[0]
        meta, stream = _keys(record.tenant_id, record.turn_id)
        if op == "open":
            pipe.hset(meta, mapping={"tenant_id": record.tenant_id, "session_id": record.session_id,
                                     "request_id": record.request_id, "owner": self.instance_id,
                                     "status": "queued", "last_seq": 0})
            pipe.expire(meta, RUNNING_TTL_SECONDS)
        elif op == "status":
            pipe.hset(meta, "status", args[1])
        else:
            seq, event = args[1], args[2]
            pipe.xadd(stream, {"e": encode_event(event)}, id=f"{seq}-0", maxlen=STREAM_MAXLEN, approximate=True)
            if isinstance(event, TurnCompleted | TurnFailed):
                status: TurnStatus = completed_status(event) if isinstance(event, TurnCompleted) else STOPPED.get(
                    event.error, "failed")
                fields: dict[str, Any] = {"status": status, "last_seq": seq}
                if isinstance(event, TurnCompleted):
                    fields["message_count"] = event.message_count
                else:
                    fields["error"] = event.error
                pipe.hset(meta, mapping=fields)
                ttl = max(1, int(self.retention_seconds))
                pipe.expire(meta, ttl)
                pipe.expire(stream, ttl)
            elif seq == 1:
                pipe.expire(stream, RUNNING_TTL_SECONDS)

    async def flush(self, timeout: float) -> bool:
        """Wait until every queued write reached Redis (or gave up); True if done in time."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        await self.flush(2.0)
        if self._writer is not None:
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
        await self._redis.aclose()
        await self._blocking.aclose()

    # --- any instance's side -------------------------------------------------------------

    async def find(self, tenant_id: str, session_id: str, turn_id: str) -> TurnView | None:
        local = self.get(tenant_id, session_id, turn_id)
        if local is not None:
            return local
        return await self._remote(tenant_id, session_id, turn_id)

    @translated
    async def _remote(self, tenant_id: str, session_id: str, turn_id: str) -> RemoteTurnRecord | None:
        meta_key, _ = _keys(tenant_id, turn_id)
        meta = text_map(await self._redis.hgetall(meta_key))
        if not meta or meta.get("tenant_id") != tenant_id or meta.get("session_id") != session_id:
            return None
        record = RemoteTurnRecord(self, turn_id, meta)
        if record.status not in _FINAL and not await self.owner_alive(record.owner) and await self.mark_lost(record):
            record = RemoteTurnRecord(self, turn_id, text_map(await self._redis.hgetall(meta_key)))
        return record

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

    @property
    def last_seq(self) -> int:
        return max(len(self.events), self._meta_last_seq)

    def _take(self, entries: Any) -> None:
        for entry_id, fields in entries:
            event = decode_event(text(fields["e"]))
            self.events.append(event)
            self._last_id = text(entry_id)
            if isinstance(event, TurnCompleted | TurnFailed):
                self.finished_at = time.monotonic()
                if isinstance(event, TurnCompleted):
                    self.status, self.message_count = completed_status(event), event.message_count
                else:
                    self.status, self.error = STOPPED.get(event.error, "failed"), event.error
                return

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

