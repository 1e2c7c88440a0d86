"""The Redis client of a turn's hot path: RESP over one asyncio connection, parsed by hiredis.

A turn on SESSION_STORE=redis makes a handful of round trips (admit, open, history, commit,
events and release). Through redis-py each costs the service 60 to 120 us of CPU (connection
pool, locks, command callbacks, a timeout context per read), several times what Redis spends on
it, so the Redis path was bound by the client's own overhead on the service's core, not by the
network or by Redis. :class:`Wire` keeps only what the hot path needs: one connection per client,
shared by every coroutine (replies come back in the order commands were written, so callers
simply queue for them), a command or a batch written in one write, and scripts sent as
``EVALSHA`` with the source loaded when Redis answers ``NOSCRIPT`` (a restarted server).

It keeps redis-py's failure contract, so everything above it is unchanged: a lost or refused
connection raises :class:`redis.exceptions.ConnectionError`, a reply later than the command
timeout :class:`redis.exceptions.TimeoutError` (and the connection is dropped, as redis-py
does, so a half-open socket never stalls the next call), an error reply the exception redis-py
raises for it (read with redis-py's own table: ``NOSCRIPT`` :class:`~redis.exceptions.NoScriptError`,
``NOAUTH`` :class:`~redis.exceptions.AuthenticationError`, ..., else
:class:`~redis.exceptions.ResponseError`). ``translated`` turns the failures into
``StoreUnavailable``. The next call reconnects.

A Redis Cluster URL (``redis+cluster://``), ``unix://``, ``rediss://`` and a URL with options in
its query get :class:`PyWire` instead: the same calls over the store's redis-py client (which
routes each command of a cluster by its keys' slot, and applies TLS and connection options).
"""

from __future__ import annotations

import asyncio
import hashlib
import weakref
from collections import deque
from collections.abc import Sequence
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import hiredis
import redis.asyncio as aioredis
import redis.exceptions
from redis._parsers.base import BaseParser

from msev15.store.redis_kit import COMMAND_TIMEOUT_SECONDS, CONNECT_TIMEOUT_SECONDS

Arg = str | int | float
Command = Sequence[Arg]


class Script:
    """A Lua script and its SHA1 (what ``EVALSHA`` names it by), computed here: no load needed
    before its first use."""

    __slots__ = ("source", "sha")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    def command(self, keys: Sequence[str], args: Sequence[Arg]) -> list[Arg]:
        return ["EVALSHA", self.sha, len(keys), *keys, *args]


class HotPath(Protocol):
    """What the hot path sends: one command, a batch (one round trip; an error reply is returned
    in its place as an exception, a failure raises), or a script."""

    async def call(self, *command: Arg) -> Any: ...

    async def batch(self, commands: Sequence[Command], *, transaction: bool = False) -> list[Any]: ...

    async def run(self, script: Script, keys: Sequence[str], args: Sequence[Arg]) -> Any: ...

    async def load(self, script: Script) -> None: ...

    async def aclose(self) -> None: ...


async def run_script(hot: HotPath, script: Script, keys: Sequence[str], args: Sequence[Arg]) -> Any:
    """``script`` by its SHA; loaded and sent once more when Redis answers ``NOSCRIPT``."""
    try:
        return await hot.call(*script.command(keys, args))
    except redis.exceptions.NoScriptError:
        await hot.load(script)
        return await hot.call(*script.command(keys, args))


async def run_each(hot: HotPath, script: Script,
                   calls: Sequence[tuple[Sequence[str], Sequence[Arg]]]) -> list[Any]:
    """Run ``script`` once per ``(keys, args)`` in one round trip. Calls Redis answered
    ``NOSCRIPT`` (a restarted server) are sent once more after loading it, and only those; any
    other error reply is raised."""
    replies = await hot.batch([script.command(keys, args) for keys, args in calls])
    missing = [i for i, reply in enumerate(replies) if isinstance(reply, redis.exceptions.NoScriptError)]
    if missing:
        await hot.load(script)
        for i, reply in zip(missing, await hot.batch([script.command(*calls[i]) for i in missing]), strict=True):
            replies[i] = reply
    return raise_errors(replies)


def raise_errors(replies: list[Any]) -> list[Any]:
    """``replies`` of a batch, once none is an error reply (the first one found is raised)."""
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies


_SHARED: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, Wire]] = weakref.WeakKeyDictionary()


def wire(url: str, client: aioredis.Redis) -> HotPath:
    """The hot path's client for ``url``: for a plain ``redis://host:port/db`` URL (credentials
    allowed, no query), the one :class:`Wire` every store of this event loop shares for it (one
    connection, so the commands of all of a turn's stores written in one loop turn share a write;
    each store's ``aclose`` gives up its share); for anything else (a cluster, a unix socket, TLS
    or connection options in the query, which redis-py knows how to apply) ``client``, the store's
    own redis-py client on ``url``, behind a :class:`PyWire`."""
    parts = urlsplit(url)
    if parts.scheme != "redis" or parts.query:
        return PyWire(client)
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # built outside a loop: a client of its own
        return Wire(url)
    wires = _SHARED.setdefault(loop, {})
    shared = wires.get(url)
    if shared is None or shared.closed:
        shared = wires[url] = Wire(url)
    else:
        shared.users += 1
    return shared


def _error(reply: hiredis.ReplyError) -> redis.exceptions.RedisError:
    """An error reply as the exception redis-py raises for it (its own table: ``NOSCRIPT``,
    ``LOADING``, ``READONLY``, ``NOAUTH``, ``OOM``, ...), so callers see one contract."""
    error: redis.exceptions.RedisError = BaseParser.parse_error(str(reply))  # type: ignore[no-untyped-call]
    return error


def _pack(commands: Sequence[Command]) -> bytes:
    """RESP arrays of bulk strings, all of them in one buffer (hiredis packs in C: a third of the
    cost of doing it here)."""
    # the stub types the argument as a one-element tuple; any length is packed
    return b"".join([hiredis.pack_command(tuple(command)) for command in commands])  # type: ignore[arg-type]


class _Expected:
    """The replies one write waits for, and who waits."""

    __slots__ = ("future", "count", "replies", "deadline")

    def __init__(self, future: asyncio.Future[list[Any]], count: int, deadline: float) -> None:
        self.future = future
        self.count = count
        self.replies: list[Any] = []
        self.deadline = deadline  # on the loop's clock


class _Connection(asyncio.Protocol):
    """Replies come back in the order their commands went out, so only the oldest unanswered
    write can be late first: one watchdog timer, armed for it, stands for a timer per command
    (which cost a heap push and a cancel on every call)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._reader = hiredis.Reader(encoding="utf-8")
        self._waiting: deque[_Expected] = deque()
        self._out: list[bytes] = []
        self._watchdog: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def send(self, data: bytes, expected: _Expected) -> None:
        """Queue ``data``: what every caller sent in one turn of the event loop goes out in one
        write (a system call per command was the largest single cost of the path)."""
        self._waiting.append(expected)
        if not self._out:
            asyncio.get_running_loop().call_soon(self._flush)
        self._out.append(data)
        if self._watchdog is None:
            self._watchdog = asyncio.get_running_loop().call_at(expected.deadline, self._watch)

    def _watch(self) -> None:
        """The watchdog: fail the oldest write if its reply is late (and drop the connection:
        every later reply would be behind the missing one), else wait for the oldest's deadline."""
        self._watchdog = None
        if not self._waiting or self.closed:
            return
        head = self._waiting[0]
        loop = asyncio.get_running_loop()
        if head.deadline > loop.time():
            self._watchdog = loop.call_at(head.deadline, self._watch)
            return
        if not head.future.done():
            head.future.set_exception(redis.exceptions.TimeoutError("Redis did not answer in time"))
        self.abort(redis.exceptions.ConnectionError("dropped after a command timed out"))

    def _flush(self) -> None:
        data = b"".join(self._out)
        self._out.clear()
        if not self.closed and self.transport is not None:
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        try:
            while (reply := self._reader.gets()) is not False:
                head = self._waiting[0]
                head.replies.append(_error(reply) if isinstance(reply, hiredis.ReplyError) else reply)
                if len(head.replies) == head.count:
                    self._waiting.popleft()
                    if not head.future.done():
                        head.future.set_result(head.replies)
        except (hiredis.ProtocolError, UnicodeDecodeError, IndexError) as exc:  # nothing to trust after this
            self.abort(redis.exceptions.ConnectionError(f"Redis reply could not be read: {type(exc).__name__}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        self._fail(redis.exceptions.ConnectionError("Redis closed the connection"))

    def abort(self, exc: Exception) -> None:
        self.closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        self._fail(exc)
        if self.transport is not None:
            self.transport.abort()

    def _fail(self, exc: Exception) -> None:
        while self._waiting:
            expected = self._waiting.popleft()
            if not expected.future.done():
                expected.future.set_exception(exc)


class Wire:
    """One connection to one Redis server, shared by every caller (see the module docstring)."""

    def __init__(self, url: str, *, timeout: float = COMMAND_TIMEOUT_SECONDS) -> None:
        parts = urlsplit(url)
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 6379
        self._setup: list[Command] = []
        if parts.password is not None:
            user = unquote(parts.username) if parts.username else None
            self._setup.append(["AUTH", *([user] if user else []), unquote(parts.password)])
        db = parts.path.strip("/")
        if db and db != "0":
            self._setup.append(["SELECT", int(db)])
        self._timeout = timeout
        self._conn: _Connection | None = None
        self._connecting: asyncio.Lock | None = None
        self.closed = False
        self.users = 1  # closed by the last user's aclose (see wire())

    async def _connection(self) -> _Connection:
        conn = self._conn
        if conn is not None and not conn.closed:
            return conn
        if self.closed:
            raise redis.exceptions.ConnectionError("this Redis client is closed")
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._conn is not None and not self._conn.closed:
                return self._conn
            loop = asyncio.get_running_loop()
            try:
                _, made = await asyncio.wait_for(
                    loop.create_connection(_Connection, self._host, self._port),
                    CONNECT_TIMEOUT_SECONDS)
            except TimeoutError as exc:
                raise redis.exceptions.TimeoutError("Redis did not accept a connection in time") from exc
            except OSError as exc:
                raise redis.exceptions.ConnectionError(f"Redis is unreachable: {exc}") from exc
            conn = made
            if self._setup:
                for reply in await self._send(conn, self._setup):
                    if isinstance(reply, Exception):
                        conn.abort(redis.exceptions.ConnectionError("Redis refused the connection's set-up"))
                        raise redis.exceptions.ConnectionError(f"Redis refused the connection: {reply}")
            self._conn = conn
            return conn

    async def _send(self, conn: _Connection, commands: Sequence[Command]) -> list[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Any]] = loop.create_future()
        conn.send(_pack(commands), _Expected(future, len(commands), loop.time() + self._timeout))
        return await future

    async def call(self, *command: Arg) -> Any:
        reply = (await self._send(await self._connection(), [command]))[0]
        if isinstance(reply, Exception):
            raise reply
        return reply

    async def batch(self, commands: Sequence[Command], *, transaction: bool = False) -> list[Any]:
        if not transaction:
            return await self._send(await self._connection(), commands)
        replies = await self._send(await self._connection(), [("MULTI",), *commands, ("EXEC",)])
        result = replies[-1]
        if isinstance(result, Exception):  # EXECABORT: a command was refused when queued
            queued = next((r for r in replies[1:-1] if isinstance(r, Exception)), result)
            raise queued
        return [_error(r) if isinstance(r, hiredis.ReplyError) else r for r in result]

    async def run(self, script: Script, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        return await run_script(self, script, keys, args)

    async def load(self, script: Script) -> None:
        await self.call("SCRIPT", "LOAD", script.source)

    async def aclose(self) -> None:
        self.users -= 1
        if self.users > 0:
            return
        self.closed = True
        conn, self._conn = self._conn, None
        if conn is not None and not conn.closed:
            conn.abort(redis.exceptions.ConnectionError("this Redis client is closed"))


class PyWire:
    """The hot path's calls over a redis-py client (a Redis Cluster routes each by its keys).
    ``aclose`` leaves the client open: its owner closes it."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._redis = client

    async def call(self, *command: Arg) -> Any:
        return await self._redis.execute_command(*command)  # type: ignore[no-untyped-call]

    async def batch(self, commands: Sequence[Command], *, transaction: bool = False) -> list[Any]:
        async with self._redis.pipeline(transaction=transaction) as pipe:
            for command in commands:
                pipe.execute_command(*command)
            return list(await pipe.execute(raise_on_error=False))

    async def run(self, script: Script, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        return await run_script(self, script, keys, args)

    async def load(self, script: Script) -> None:
        await self._redis.script_load(script.source)  # on every node of a cluster

    async def aclose(self) -> None:
        pass
