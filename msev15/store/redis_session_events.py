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
(a streamed turn's tokens cost one round trip per batch, not one each).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import redis.asyncio as aioredis

from msev15.store.redis_kit import connect, script_batch, tenant_key, text, translated
from msev15.store.session_events import MAX_EVENTS_PER_SESSION, Entry

log = logging.getLogger("store.session_events")

COUNTER_TTL_SECONDS = 7 * 86_400
MAX_READ_BLOCK_SECONDS = 30.0

MAX_BATCH = 500  # events per pipeline

# KEYS: 1 stream, 2 counter. ARGV: 1 cap, 2 retention seconds, 3 counter TTL, 4.. the events' JSON.
# Numbers the events in order and returns the first one's id.
_APPEND = """
local n = #ARGV - 3
local first = redis.call('INCRBY', KEYS[2], n) - n + 1
for i = 4, #ARGV do
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], (first + i - 4) .. '-0', 'e', ARGV[i])
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[3])
return first
"""

Queued = tuple[str, str, dict[str, Any], "asyncio.Future[int] | None"]


def _keys(tenant_id: str, session_id: str) -> list[str]:
    return [tenant_key(tenant_id, "sevents", session_id), tenant_key(tenant_id, "sevseq", session_id)]


class RedisSessionEvents:
    def __init__(self, url: str, retention_seconds: float) -> None:
        self.retention = max(1, int(retention_seconds))
        self._redis: aioredis.Redis = connect(url)
        self._blocking: aioredis.Redis = connect(url, socket_timeout=MAX_READ_BLOCK_SECONDS + 5)
        self._append = self._redis.register_script(_APPEND)
        self._queue: asyncio.Queue[Queued] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None

    async def _write(self, batch: list[Queued]) -> list[int]:
        """Append ``batch`` (in order) in one round trip; each event's id, in the batch's order."""
        by_session: dict[tuple[str, str], list[int]] = {}
        for i, (tenant_id, session_id, _, _) in enumerate(batch):
            by_session.setdefault((tenant_id, session_id), []).append(i)
        firsts = await script_batch(self._redis, self._append, [
            (_keys(tenant_id, session_id), [MAX_EVENTS_PER_SESSION, self.retention, COUNTER_TTL_SECONDS,
                                            *(json.dumps(batch[i][2], ensure_ascii=False) for i in positions)])
            for (tenant_id, session_id), positions in by_session.items()])
        ids = [0] * len(batch)
        for first, positions in zip(firsts, by_session.values(), strict=True):
            for offset, i in enumerate(positions):
                ids[i] = int(first) + offset
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

    def publish(self, tenant_id: str, session_id: str, event: dict[str, Any]) -> None:
        self._queue.put_nowait((tenant_id, session_id, event, None))

    @translated
    async def append(self, tenant_id: str, session_id: str, event: dict[str, Any]) -> int:
        if self._writer is None or self._writer.done():
            return (await self._write([(tenant_id, session_id, event, None)]))[0]
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((tenant_id, session_id, event, done))  # after what was published before it
        return await done

    @translated
    async def read(self, tenant_id: str, session_id: str, after: int, wait: float) -> list[Entry]:
        stream = _keys(tenant_id, session_id)[0]
        block = max(1, int(min(wait, MAX_READ_BLOCK_SECONDS) * 1000))
        reply: Any = await self._blocking.xread({stream: f"{after}-0"}, count=500, block=block)
        entries: list[Entry] = []
        for _, items in reply or ():
            for entry_id, fields in items:
                entries.append((int(text(entry_id).split("-")[0]), json.loads(fields["e"])))
        return entries

    @translated
    async def last_id(self, tenant_id: str, session_id: str) -> int:
        value = await self._redis.get(_keys(tenant_id, session_id)[1])
        return int(value) if value else 0

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
            try:
                await self._writer
            except asyncio.CancelledError:
                pass
        await self._redis.aclose()
        await self._blocking.aclose()
