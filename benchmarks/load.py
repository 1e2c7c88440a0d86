"""The load generator: asyncio protocols speaking plain HTTP/1.1 to one loopback port.

Two shapes of load:

* ``closed_loop`` — N keep-alive connections, each sending its next request as soon as the last
  answer is complete (optionally no faster than one per ``interval``). Bounded by a duration and
  a request count, whichever comes first.
* ``StreamBurst`` — N requests at once, one connection each, opened at most ``open_concurrency``
  at a time; a stream counts as open from its response head to its last byte. Bounded by count
  and a timeout.

Each request is built by a ``RequestFactory(connection_index, request_number) -> bytes`` so a
phase can rotate sessions, paths or bodies without allocating anything up front.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from benchmarks.httpwire import ResponseParser, json_post
from benchmarks.stats import LoadResult

RequestFactory = Callable[[int, int], bytes]
STREAM_DONE = b'"type": "done"'  # the terminal SSE event, in both the service and the reference
GRACE_SECONDS = 10.0
CHAT = "/api/v1/chat"
STREAM = "/api/v1/chat/stream"
MESSAGE = "Where is my order ORD-1A2B3C4D?"


def chat_factory(path: str, tag: str, every: int) -> RequestFactory:
    """Chat requests to ``path``; each connection starts a new session every ``every`` requests."""

    def build(conn: int, n: int) -> bytes:
        return json_post(path, {"session_id": f"{tag}-{conn}-{n // every}", "message": MESSAGE, "tenant_id": "bench"})

    return build


@dataclass(frozen=True, slots=True)
class Expect:
    """What counts as a good response: its status and, optionally, a marker its body must hold."""

    status: int = 200
    contains: bytes | None = None


class _Tally:
    def __init__(self, expect: Expect) -> None:
        self.expect = expect
        self.latencies: list[float] = []
        self.first_data: list[float] = []
        self.errors: Counter[str] = Counter()
        self.completed = 0
        self.last_done = 0.0

    def record(self, parser: ResponseParser, sent_at: float, now: float) -> None:
        self.last_done = now
        if parser.status != self.expect.status:
            self.errors[f"HTTP {parser.status}"] += 1
            return
        if self.expect.contains is not None and self.expect.contains not in parser.body:
            self.errors["body without its terminal marker"] += 1
            return
        self.completed += 1
        self.latencies.append(now - sent_at)
        if parser.first_data_at is not None:
            self.first_data.append(parser.first_data_at - sent_at)

    def result(self, started: float, ended: float, peak_open: int = 0) -> LoadResult:
        return LoadResult(self.completed, max(ended - started, 1e-9), tuple(self.latencies),
                          tuple(self.first_data), self.errors, peak_open)


class _KeepAlive(asyncio.Protocol):
    """One connection of a closed loop."""

    def __init__(self, loop: _ClosedLoop, index: int) -> None:
        self.run = loop
        self.index = index
        self.seq = 0
        self.busy = False
        self.sent_at = 0.0
        self.parser = ResponseParser(keep_body=loop.tally.expect.contains is not None)
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._send()

    def _send(self) -> None:
        self._timer = None
        run = self.run
        now = time.perf_counter()
        if now >= run.deadline or run.issued >= run.max_requests:
            self.transport.close()  # type: ignore[union-attr]
            return
        run.issued += 1
        self.parser.reset()
        self.busy = True
        self.sent_at = now
        self.transport.write(run.factory(self.index, self.seq))  # type: ignore[union-attr]
        self.seq += 1

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        try:
            complete = self.parser.feed(data, now)
        except ValueError:
            self.run.tally.errors["malformed response"] += 1
            self.busy = False
            self.transport.close()  # type: ignore[union-attr]
            return
        if not complete:
            return
        self.busy = False
        self.run.tally.record(self.parser, self.sent_at, now)
        wait = self.sent_at + self.run.interval - now
        if wait > 0:
            self._timer = asyncio.get_running_loop().call_later(wait, self._send)
        else:
            self._send()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self.busy:
            self.busy = False
            self.run.tally.errors["connection lost mid-response"] += 1
        if not self.closed.done():
            self.closed.set_result(None)


class _ClosedLoop:
    def __init__(self, factory: RequestFactory, expect: Expect, deadline: float, max_requests: int,
                 interval: float) -> None:
        self.factory = factory
        self.tally = _Tally(expect)
        self.deadline = deadline
        self.max_requests = max_requests
        self.interval = interval
        self.issued = 0


async def closed_loop(port: int, factory: RequestFactory, *, connections: int, duration: float,
                      max_requests: int, expect: Expect = Expect(), interval: float = 0.0,
                      host: str = "127.0.0.1") -> LoadResult:
    """Drive ``connections`` keep-alive connections for ``duration`` s or ``max_requests`` requests."""
    if connections < 1 or duration <= 0 or max_requests < 1:
        raise ValueError("connections, duration and max_requests must be positive")
    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    run = _ClosedLoop(factory, expect, started + duration, max_requests, interval)
    conns: list[_KeepAlive] = []
    for index in range(connections):
        try:
            _, conn = await loop.create_connection(functools.partial(_KeepAlive, run, index), host, port)
        except OSError as exc:
            run.tally.errors[f"connect: {exc.strerror or exc}"] += 1
            continue
        conns.append(conn)
    try:
        async with asyncio.timeout(duration + GRACE_SECONDS):
            await asyncio.gather(*(c.closed for c in conns))
    except TimeoutError:
        for conn in conns:
            if conn.busy:
                conn.busy = False
                run.tally.errors["no answer before the phase deadline"] += 1
            if conn.transport is not None:
                conn.transport.abort()
        await asyncio.gather(*(c.closed for c in conns))
    return run.tally.result(started, run.tally.last_done or time.perf_counter())


class _OneShot(asyncio.Protocol):
    """One request on its own connection; closes once the answer is complete."""

    def __init__(self, burst: StreamBurst, request: bytes) -> None:
        self.burst = burst
        self.request = request
        self.parser = ResponseParser(keep_body=burst.tally.expect.contains is not None)
        self.opened = False
        self.finished = False
        self.sent_at = 0.0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.sent_at = time.perf_counter()
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        if self.finished:
            return
        now = time.perf_counter()
        try:
            complete = self.parser.feed(data, now)
        except ValueError:
            self.finish("malformed response")
            return
        if self.parser.status and not self.opened:
            self.opened = True
            self.burst.on_open()
        if complete:
            self.burst.tally.record(self.parser, self.sent_at, now)
            self.finish(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.finished:
            self.finish("connection lost mid-response")

    def finish(self, error: str | None) -> None:
        self.finished = True
        if error:
            self.burst.tally.errors[error] += 1
        self.burst.on_finish(self.opened)
        if self.transport is not None:
            self.transport.close()


class StreamBurst:
    """``count`` concurrent requests, one connection each. Watch ``open_now``/``all_open`` while it runs."""

    def __init__(self, port: int, factory: RequestFactory, count: int, *, expect: Expect,
                 open_concurrency: int = 256, timeout: float = 120.0, host: str = "127.0.0.1") -> None:
        if count < 1 or open_concurrency < 1 or timeout <= 0:
            raise ValueError("count, open_concurrency and timeout must be positive")
        self.port, self.host = port, host
        self.factory = factory
        self.count = count
        self.timeout = timeout
        self.tally = _Tally(expect)
        self.opened = 0
        self.finished = 0
        self.open_now = 0
        self.peak_open = 0
        self.all_open = asyncio.Event()
        self._all_finished = asyncio.Event()
        self._slots = asyncio.Semaphore(open_concurrency)
        self._conns: list[_OneShot] = []

    def on_open(self) -> None:
        self.opened += 1
        self.open_now += 1
        self.peak_open = max(self.peak_open, self.open_now)
        self._slots.release()
        if self.opened == self.count:
            self.all_open.set()

    def on_finish(self, opened: bool) -> None:
        self.finished += 1
        if opened:
            self.open_now -= 1
        else:
            self._slots.release()
        if self.finished == self.count:
            self._all_finished.set()

    async def run(self) -> LoadResult:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout):
                for index in range(self.count):
                    await self._slots.acquire()
                    try:
                        _, conn = await loop.create_connection(
                            functools.partial(_OneShot, self, self.factory(index, 0)), self.host, self.port)
                    except OSError as exc:
                        self.tally.errors[f"connect: {exc.strerror or exc}"] += 1
                        self.on_finish(False)
                        continue
                    self._conns.append(conn)
                await self._all_finished.wait()
        except TimeoutError:
            for conn in self._conns:
                if not conn.finished:
                    conn.finish("no answer before the phase deadline")
            never = self.count - self.finished
            if never:
                self.tally.errors["not started before the phase deadline"] += never
        await asyncio.sleep(0)  # let the closing transports report connection_lost
        return self.tally.result(started, self.tally.last_done or time.perf_counter(), self.peak_open)
