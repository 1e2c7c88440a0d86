"""The session stream's log in Redis (SESSION_STORE=redis): every instance appends to, and reads
from, one stream per session, so a customer connected to one instance hears what an operator
wrote through another and the turns any instance runs.

Per session a Redis stream ``msev15:{tenant}:sevents:{session}`` whose entry ids are the events'
own ids (``{id}-0``, from the counter ``…:sevseq:{session}``), both written by one script, so
ids increase across instances. The stream is capped at MAX_EVENTS_PER_SESSION entries and expires
STREAM_RETENTION_SECONDS after its last event; the counter outlives it (a week), so ids never
restart under a reader that comes back. ``publish`` queues for one writer task per instance,
which keeps this instance's events in publish order; readers block in XREAD on their own client.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import redis.asyncio as aioredis

from msev15.store.redis_kit import connect, tenant_key, text, translated
from msev15.store.session_events import MAX_EVENTS_PER_SESSION, Entry

log = logging.getLogger("store.session_events")

COUNTER_TTL_SECONDS = 7 * 86_400
MAX_READ_BLOCK_SECONDS = 30.0

# KEYS: 1 stream, 2 counter, 3 watch flag. ARGV: 1 event JSON, 2 cap, 3 retention seconds, 4 counter
# TTL, 5 '1': only if the session is watched (a turn's event; returns 0 when it is not).
_APPEND = """
if ARGV[5] == '1' and redis.call('EXISTS', KEYS[3]) == 0 then return 0 end
local seq = redis.call('INCR', KEYS[2])
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], seq .. '-0', 'e', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[4])
return seq
"""


# KEYS: 1 stream, 2 counter. ARGV: 1 the last event's JSON ('' none), 2 retention seconds, 3 counter TTL.
_FORGET = """
redis.call('DEL', KEYS[1])
if ARGV[1] == '' then
  redis.call('DEL', KEYS[2])
  return 0
end
local seq = redis.call('INCR', KEYS[2])
redis.call('XADD', KEYS[1], seq .. '-0', 'e', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[3])
return seq
"""


def _keys(tenant_id: str, session_id: str) -> list[str]:
    """The stream, its id counter, and the flag a reader sets while it watches (expiring)."""
    return [tenant_key(tenant_id, "sevents", session_id), tenant_key(tenant_id, "sevseq", session_id),
            tenant_key(tenant_id, "sevwatch", session_id)]


class RedisSessionEvents:
    def __init__(self, url: str, retention_seconds: float) -> None:
        self.retention = max(1, int(retention_seconds))
        self._redis: aioredis.Redis = connect(url)
        self._blocking: aioredis.Redis = connect(url, socket_timeout=MAX_READ_BLOCK_SECONDS + 5)
        self._append = self._redis.register_script(_APPEND)
        self._forget = self._redis.register_script(_FORGET)
        # (tenant, session, event, done, forget): a forget is queued too, to come after what was published
        self._queue: asyncio.Queue[tuple[str, str, dict[str, Any] | None, asyncio.Future[int] | None, bool]] = (
            asyncio.Queue())
        self._writer: asyncio.Task[None] | None = None

    async def _write(self, tenant_id: str, session_id: str, event: dict[str, Any] | None, forget: bool = False,
                     if_watched: bool = False) -> int:
        if forget:
            return int(await self._forget(keys=_keys(tenant_id, session_id)[:2],
                                          args=["" if event is None else json.dumps(event, ensure_ascii=False),
                                                self.retention, COUNTER_TTL_SECONDS]))
        assert event is not None
        return int(await self._append(keys=_keys(tenant_id, session_id),
                                      args=[json.dumps(event, ensure_ascii=False), MAX_EVENTS_PER_SESSION,
                                            self.retention, COUNTER_TTL_SECONDS, "1" if if_watched else "0"]))

    async def _drain(self) -> None:
        while True:
            tenant_id, session_id, event, done, forget = await self._queue.get()
            try:  # a turn's event (no future: published) only if a reader watches the session
                seq = await self._write(tenant_id, session_id, event, forget, if_watched=done is None)
            except Exception as exc:  # Redis down: the session stream misses it; turns go on
                if done is not None and not done.done():
                    done.set_exception(exc)
                else:
                    log.warning("session event not written: %s", type(exc).__name__)
                continue
            if done is not None and not done.done():
                done.set_result(seq)

    def start(self) -> None:
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._drain(), name="session-events:writer")

    def watched(self, tenant_id: str, session_id: str) -> bool:
        return True  # readers may be on any instance: the append script checks their flag

    async def _watch(self, tenant_id: str, session_id: str) -> None:
        await self._redis.set(_keys(tenant_id, session_id)[2], b"1", ex=self.retention)

    def publish(self, tenant_id: str, session_id: str, event: dict[str, Any]) -> None:
        self._queue.put_nowait((tenant_id, session_id, event, None, False))

    @translated
    async def append(self, tenant_id: str, session_id: str, event: dict[str, Any]) -> int:
        if self._writer is None or self._writer.done():
            return await self._write(tenant_id, session_id, event)
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((tenant_id, session_id, event, done, False))  # after what was published before it
        return await done

    @translated
    async def forget(self, tenant_id: str, session_id: str, last: dict[str, Any] | None = None) -> None:
        if self._writer is None or self._writer.done():
            await self._write(tenant_id, session_id, last, forget=True)
            return
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((tenant_id, session_id, last, done, True))  # after what was published before it
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
        if self._writer is not None:
            self._writer.cancel()
            try:
                await self._writer
            except asyncio.CancelledError:
                pass
        await self._redis.aclose()
        await self._blocking.aclose()
