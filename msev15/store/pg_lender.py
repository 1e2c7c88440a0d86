"""The instance's PostgreSQL connections, lent one at a time (what :class:`~msev15.store.pg_kit.Database`
hands its stores).

Why not ``asyncpg.Pool``: every statement a store runs borrows a connection, and the pool's
borrow-and-return cost more than the statement itself. Measured on one core with 32 callers and a
primary-key SELECT: about 54 us of CPU per call through the pool, 26 us on a bare connection. The
pool wraps each acquire with a timeout in a task of its own, each release in ``asyncio.shield`` (a
second task) and a timer, and builds a proxy per borrow. A turn borrows several times, so the pool
alone was the largest cost of the ``postgres`` store on the service's side. What this keeps of it:

- **Bounded**: at most ``max_size`` connections, opened on demand (none at construction: the
  service starts not ready when PostgreSQL is down). A borrower beyond that waits, first come
  first served, up to its timeout (``TimeoutError``), for a returned connection or for a slot
  that frees (a connection closed): the slot goes to the first waiter, who opens a connection
  in it ahead of callers that came later.
- **A returned connection is reused only when it is known to be clean**: the block that used it
  ended normally, or with an error PostgreSQL answered (a constraint, a deadlock: the connection is
  idle again and its transaction rolled back). After anything else (a cancellation or command
  timeout mid-statement, a lost connection, a transaction left open) it is closed, gracefully: a
  statement given up on is cancelled on the server first, as the pool does. Its slot is free once
  it is closed, and a waiting borrower opens a fresh one. The rule costs no round trip, where the
  pool's reset query cost one.
- **Failures reach the borrower**: a failed connect raises to the borrower that tried, and the next
  waiter tries again (so callers behind an unreachable server fail in turn, each within its own
  timeout, rather than waiting out the others'). A connection PostgreSQL closed while it was
  idle is replaced when it is next taken; one that died without a word (no FIN reached us) fails
  its next statement (503 ``store_unavailable`` for its caller) and is replaced after that.
- **Idle connections close** after ``idle_seconds`` without use (checked by one timer).
- ``close()`` refuses new borrowers, closes idle connections and waits (bounded) for the lent ones.

Sessions carry no state between borrowers: ``TimeZone`` is set at connect (a server setting, no
statement), no store uses LISTEN or session-level advisory locks (the migration lock is released
where it is taken).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

log = logging.getLogger("store.postgres")

IDLE_SECONDS = 60.0
CLOSE_SECONDS = 2.0  # a graceful close (a pending cancel request, then goodbye) gets this long


class LenderClosed(asyncpg.InterfaceError):
    """The lender was closed: no connection is lent any more."""


class Lender:
    """Lends at most ``max_size`` connections made by ``connect``; see the module's docstring."""

    def __init__(self, connect: Callable[[], Awaitable[asyncpg.Connection]], *, max_size: int,
                 idle_seconds: float = IDLE_SECONDS) -> None:
        if max_size < 1:
            raise ValueError("max_size must be at least 1")
        self._connect = connect
        self.max_size = max_size
        self.idle_seconds = idle_seconds
        self._idle: collections.deque[tuple[asyncpg.Connection, float]] = collections.deque()  # newest last
        self._opened = 0  # connections open or being opened (lent and idle included)
        self._lent: set[asyncpg.Connection] = set()
        self._waiters: collections.deque[asyncio.Future[asyncpg.Connection | None]] = collections.deque()
        self._closed = False
        self._all_returned: asyncio.Event | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._closing: set[asyncio.Task[None]] = set()  # connections being closed (gracefully)

    # --- borrowing ----------------------------------------------------------------------------

    async def acquire(self, timeout: float | None = None) -> asyncpg.Connection:
        """A connection for the caller alone until :meth:`release`; ``TimeoutError`` when none is
        free within ``timeout``; the connect's own error when a new one cannot be opened."""
        conn = self._take()
        if conn is not None:
            return conn
        async with asyncio.timeout(timeout):
            return await self._acquire_slowly()

    def release(self, conn: asyncpg.Connection, *, reusable: bool = True) -> None:
        """Give ``conn`` back. ``reusable`` False (the borrower's block ended abnormally), a closed
        connection or one inside a transaction is closed instead of being lent again."""
        if conn not in self._lent:  # terminate() took it back already
            conn.terminate()
            return
        self._lent.discard(conn)
        if self._closed:
            self._close_later(conn)
        elif not reusable or conn.is_closed() or conn.is_in_transaction():
            self._discard(conn)
        else:
            self._give(conn)
        if self._all_returned is not None and not self._lent:
            self._all_returned.set()

    def _take(self) -> asyncpg.Connection | None:
        if self._closed:
            raise LenderClosed("the connection lender is closed")
        idle = self._idle
        while idle:
            conn = idle.pop()[0]
            if not conn.is_closed():
                self._lent.add(conn)
                return conn
            self._opened -= 1  # dropped by the server while idle (no one waits while one is idle)
        return None

    async def _acquire_slowly(self) -> asyncpg.Connection:
        loop = asyncio.get_running_loop()
        conn = self._take()
        if conn is not None:
            return conn
        if self._opened < self.max_size:
            self._opened += 1
            return await self._open_in_slot()
        waiter: asyncio.Future[asyncpg.Connection | None] = loop.create_future()
        self._waiters.append(waiter)
        try:
            handed = await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                given = waiter.result()  # handed over as the caller gave up: pass it on
                if given is not None:
                    self.release(given)
                else:
                    self._pass_slot()
            else:
                waiter.cancel()
            raise
        if handed is not None:
            return handed
        return await self._open_in_slot()  # None: a slot, counted already, is this caller's to open

    async def _open_in_slot(self) -> asyncpg.Connection:
        """Open a connection in a slot counted in ``_opened`` for this caller."""
        try:
            conn = await self._connect()
        except BaseException:
            self._pass_slot()  # the next waiter tries for itself
            raise
        if self._closed:
            conn.terminate()
            raise LenderClosed("the connection lender is closed")
        self._lent.add(conn)
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(self.idle_seconds, self._sweep)
        return conn

    def _give(self, conn: asyncpg.Connection) -> None:
        """To the first waiter still waiting, else to the idle stack."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._lent.add(conn)
                waiter.set_result(conn)
                return
        self._idle.append((conn, asyncio.get_running_loop().time()))

    def _discard(self, conn: asyncpg.Connection) -> None:
        """Close ``conn`` for good; its slot is free once it is closed. A statement cancelled
        mid-flight is cancelled on the server first (asyncpg sends the cancel request; a graceful
        close waits for it), so nothing the borrower gave up on runs on, holding locks, after it."""
        if conn.is_closed():
            self._slot_freed()
        else:
            self._close_later(conn, then=self._slot_freed)

    def _slot_freed(self) -> None:
        if not self._closed:
            self._pass_slot()

    def _pass_slot(self) -> None:
        """A slot counted in ``_opened`` is free: it goes, still counted, to the first waiter (who
        opens a connection in it, ahead of later callers), else it is uncounted."""
        if self._closed:
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._opened -= 1

    def _close_later(self, conn: asyncpg.Connection, then: Callable[[], None] | None = None) -> None:
        task = asyncio.get_running_loop().create_task(_close_quietly(conn))
        self._closing.add(task)

        def closed(_: asyncio.Task[None]) -> None:
            self._closing.discard(task)
            if then is not None:
                then()

        task.add_done_callback(closed)

    def _sweep(self) -> None:
        """Close the connections idle for longer than ``idle_seconds`` (the oldest are first)."""
        self._sweeper = None
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        cutoff = loop.time() - self.idle_seconds
        while self._idle and self._idle[0][1] <= cutoff:
            self._close_later(self._idle.popleft()[0], then=self._slot_freed)
        if self._opened:
            self._sweeper = loop.call_later(self.idle_seconds, self._sweep)

    # --- figures and shutdown -------------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        return {"open": self._opened, "idle": len(self._idle), "lent": len(self._lent), "waiting": len(self._waiters)}

    async def close(self, timeout: float) -> None:
        """No more borrowing; the idle connections closed (gracefully, within ``timeout``); the
        lent ones closed as they come back, and terminated when not back within ``timeout``."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        self._fail_waiters()
        idle, self._idle = [c for c, _ in self._idle], collections.deque()
        for conn in idle:
            self._close_later(conn)
        try:
            async with asyncio.timeout(timeout):
                if self._lent:
                    self._all_returned = asyncio.Event()
                    await self._all_returned.wait()
                while self._closing:
                    await asyncio.gather(*self._closing, return_exceptions=True)
        except TimeoutError:
            self.terminate()
        self._opened = 0  # all closed (after close, nothing is counted any more)

    def terminate(self) -> None:
        """Close every connection at once (no goodbye to the server)."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for task in self._closing:
            task.cancel()  # its connection is aborted (asyncpg's close, cancelled, aborts it)
        for conn in [c for c, _ in self._idle] + list(self._lent):
            conn.terminate()
        self._idle.clear()
        self._lent.clear()
        self._fail_waiters()
        self._opened = 0

    def _fail_waiters(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(LenderClosed("the connection lender is closed"))
        self._waiters.clear()


async def _close_quietly(conn: asyncpg.Connection) -> None:
    """asyncpg's graceful close: it waits for a cancel request in flight, then says goodbye; on
    any failure (or a cancel of this task) it aborts the connection."""
    try:
        await conn.close(timeout=CLOSE_SECONDS)
    except Exception as exc:  # already gone, or it did not answer in time: aborted by close()
        log.debug("closing a PostgreSQL connection: %s", exc)


def connector(url: str, *, connect_timeout: float, command_timeout: float,
              **extra: Any) -> Callable[[], Awaitable[asyncpg.Connection]]:
    """The lender's ``connect``: one asyncpg connection to ``url`` in UTC, each statement bounded."""

    async def connect() -> asyncpg.Connection:
        conn: asyncpg.Connection = await asyncpg.connect(
            url, timeout=connect_timeout, command_timeout=command_timeout,
            server_settings={"TimeZone": "UTC"}, **extra)
        return conn

    return connect
