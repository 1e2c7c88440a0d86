"""The session stream's log in Redis (SESSION_STORE=redis): every instance appends to, and reads
from, one stream per session, so a customer connected to one instance hears what an operator
wrote through another and the turns any instance runs.

Per session a Redis stream ``msev15:{tenant}:sevents:{session}`` whose entry ids are the events'
own ids (``{id}-0``, from the counter ``…:sevseq:{session}``), both written by one script, so
ids increase across instances. The stream is capped at MAX_EVENTS_PER_SESSION entries and expires
STREAM_RETENTION_SECONDS after its last event; the counter outlives it (a week), so ids never
restart under a reader that comes back. ``publish`` queues for one writer task per instance,
which keeps this instance's events in publish order; readers block in XREAD on their own client.
The writer sends everything queued since its last write in one pipeline, one script per session
(a streamed turn's tokens cost one round trip per batch, not one each); a turn's events are kept
only while a reader watches the session (a flag each read sets), what people write always. The
writer asks first which of a batch's sessions are watched, so a turn nobody watches costs that
one small round trip and no encoding.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import redis.asyncio as aioredis

from msev15.common.tasks import close_within, stop_task
from msev15.store.redis_kit import connect, tenant_key, text, translated
from msev15.store.redis_wire import Command, Script, raise_errors, run_each, wire
from msev15.store.session_events import MAX_EVENTS_PER_SESSION, Entry

log = logging.getLogger("store.session_events")

COUNTER_TTL_SECONDS = 7 * 86_400
MAX_READ_BLOCK_SECONDS = 30.0

MAX_BATCH = 500  # events per pipeline

# KEYS: 1 stream, 2 counter, 3 watch flag. ARGV: 1 cap, 2 retention seconds, 3 counter TTL, then pairs
# (op, event JSON) in order: 'a' append; 'w' append only if a reader watches the session (a turn's
# event); 'f' forget the stream (the session is gone), then append the event if there is one ('')
# or drop the counter too. Returns each pair's id (0: not appended).
_WRITE = """
local watched = redis.call('EXISTS', KEYS[3]) == 1
local ids = {}
for i = 4, #ARGV, 2 do
  local op, event = ARGV[i], ARGV[i + 1]
  local id = 0
  if op == 'f' then
    redis.call('DEL', KEYS[1])
    if event == '' then
      redis.call('DEL', KEYS[2])
    else
      id = redis.call('INCR', KEYS[2])
      redis.call('XADD', KEYS[1], id .. '-0', 'e', event)
    end
  elseif op == 'a' or watched then
    id = redis.call('INCR', KEYS[2])
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], id .. '-0', 'e', event)
  end
  ids[#ids + 1] = id
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[3])
return ids
"""

APPEND, IF_WATCHED, FORGET = "a", "w", "f"
Queued = tuple[str, str, dict[str, Any] | None, "asyncio.Future[int] | None", str]  # ..., done, op


def _keys(tenant_id: str, session_id: str) -> list[str]:
    """The stream, its id counter, and the flag a reader sets while it watches (expiring)."""
    return [tenant_key(tenant_id, "sevents", session_id), tenant_key(tenant_id, "sevseq", session_id),
            tenant_key(tenant_id, "sevwatch", session_id)]


class RedisSessionEvents:
    def __init__(self, url: str, retention_seconds: float) -> None:
        self.retention = max(1, int(retention_seconds))
        self._redis: aioredis.Redis = connect(url)
        self._blocking: aioredis.Redis = connect(url, socket_timeout=MAX_READ_BLOCK_SECONDS + 5)
        self._hot = wire(url, self._redis)  # the writes, one per turn (store/redis_wire.py)
        self._script = Script(_WRITE)
        # A forget is queued too, to come after what was published before it.
        self._queue: asyncio.Queue[Queued] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None

    async def _write(self, batch: list[Queued]) -> list[int]:
        """Apply ``batch`` (in order per session); each item's id (0: none). A turn's events
        (``IF_WATCHED``) are encoded and sent only for sessions a reader watches: one round trip
        asks which of the batch's sessions are (and renews their keys' expiry, as a write would),
        so the usual case, nobody watching, encodes nothing; an event published before that
        question is answered is kept whenever a reader was watching by then (the rule the script
        applied)."""
        by_session: dict[tuple[str, str], list[int]] = {}
        for i, item in enumerate(batch):
            by_session.setdefault((item[0], item[1]), []).append(i)
        asked = [key for key, positions in by_session.items() if any(batch[i][4] == IF_WATCHED for i in positions)]
        watched: set[tuple[str, str]] = set()
        if asked:
            commands: list[Command] = []
            for tenant_id, session_id in asked:
                stream, counter, flag = _keys(tenant_id, session_id)
                commands += [("EXISTS", flag), ("EXPIRE", stream, self.retention),
                             ("EXPIRE", counter, COUNTER_TTL_SECONDS)]
            replies = raise_errors(await self._hot.batch(commands))
            watched = {key for key, found in zip(asked, replies[::3], strict=True) if int(found)}
        calls, sent = [], []
        for key, positions in by_session.items():
            kept = [i for i in positions if batch[i][4] != IF_WATCHED or key in watched]
            if not kept:
                continue
            args: list[str | int] = [MAX_EVENTS_PER_SESSION, self.retention, COUNTER_TTL_SECONDS]
            for i in kept:
                event = batch[i][2]
                args += [batch[i][4], "" if event is None else json.dumps(event, ensure_ascii=False)]
            calls.append((_keys(*key), args))
            sent.append(kept)
        ids = [0] * len(batch)
        if calls:
            for reply, kept in zip(await run_each(self._hot, self._script, calls), sent, strict=True):
                for i, seq in zip(kept, reply, strict=True):
                    ids[i] = int(seq)
        return ids

    async def _drain(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < MAX_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                ids = await self._write(batch)
            except Exception as exc:  # Redis down: the session stream misses them; turns go on
                waited = [item[3] for item in batch if item[3] is not None and not item[3].done()]
                for future in waited:
                    future.set_exception(exc)
                if len(waited) < len(batch):
                    log.warning("%d session events not written: %s", len(batch) - len(waited), type(exc).__name__)
                continue
            for item, seq in zip(batch, ids, strict=True):
                waiter = item[3]
                if waiter is not None and not waiter.done():
                    waiter.set_result(seq)

    def start(self) -> None:
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._drain(), name="session-events:writer")

    def watched(self, tenant_id: str, session_id: str) -> bool:
        return True  # readers may be on any instance: the append script checks their flag

    async def _watch(self, tenant_id: str, session_id: str) -> None:
        await self._redis.set(_keys(tenant_id, session_id)[2], b"1", ex=self.retention)

    def publish(self, tenant_id: str, session_id: str, event: dict[str, Any]) -> None:
        self._queue.put_nowait((tenant_id, session_id, event, None, IF_WATCHED))

    @translated
    async def append(self, tenant_id: str, session_id: str, event: dict[str, Any]) -> int:
        if self._writer is None or self._writer.done():
            return (await self._write([(tenant_id, session_id, event, None, APPEND)]))[0]
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((tenant_id, session_id, event, done, APPEND))  # after what was published before it
        return await done

    @translated
    async def forget(self, tenant_id: str, session_id: str, last: dict[str, Any] | None = None) -> None:
        if self._writer is None or self._writer.done():
            await self._write([(tenant_id, session_id, last, None, FORGET)])
            return
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((tenant_id, session_id, last, done, FORGET))  # after what was published before it
        await done

    @translated
    async def read(self, tenant_id: str, session_id: str, after: int, wait: float) -> list[Entry]:
        stream = _keys(tenant_id, session_id)[0]
        await self._watch(tenant_id, session_id)
        block = max(1, int(min(wait, MAX_READ_BLOCK_SECONDS) * 1000))
        reply: Any = await self._blocking.xread({stream: f"{after}-0"}, count=500, block=block)
        entries: list[Entry] = []
        for _, items in reply or ():
            for entry_id, fields in items:
                entries.append((int(text(entry_id).split("-")[0]), json.loads(fields["e"])))
        return entries

    @translated
    async def last_id(self, tenant_id: str, session_id: str) -> int:
        await self._watch(tenant_id, session_id)
        value = await self._redis.get(_keys(tenant_id, session_id)[1])
        return int(value) if value else 0

    async def close(self) -> None:
        await stop_task(self._writer)
        await close_within(self._hot.aclose(), "the session stream's hot-path Redis client")
        await close_within(self._redis.aclose(), "the session stream's Redis client")
        await close_within(self._blocking.aclose(), "the session stream's blocking Redis client")
