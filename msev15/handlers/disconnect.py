"""Noticing that a client left while its handler waits.

aiohttp does not cancel a handler when its client disconnects (``handler_cancellation`` is off,
and turning it on would cancel every handler mid-step, the SSE relays and their clean endings
included). A plain ``POST /api/v1/chat`` has nobody to deliver its answer to once its client is
gone, so it waits for the turn's end *or* the client's departure, and on departure cancels the
turn (a streaming turn is different: it stays resumable, and runs on).

Watching costs a callback, never a task: under ``msev15 serve`` the connection's protocol
(:class:`msev15.server.connections.GuardedProtocol`) completes a future when the connection is lost, and
the callback rides on it. Under aiohttp's own runner (``web.run_app``) one poller per event loop
checks every watched transport each ``POLL_SECONDS``, and runs only while something is watched.
A server run with ``handler_cancellation`` (aiohttp's test server) cancels the handler instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiohttp import web

POLL_SECONDS = 0.5

Unwatch = Callable[[], None]


class _Poller:
    """Watches transports that have no ``lost`` future, all on one timer."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._watched: dict[int, tuple[asyncio.BaseTransport, Callable[[], None]]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._next = 0

    def watch(self, transport: asyncio.BaseTransport, callback: Callable[[], None]) -> Unwatch:
        key = self._next = self._next + 1
        self._watched[key] = (transport, callback)
        if self._timer is None:
            self._timer = self._loop.call_later(POLL_SECONDS, self._poll)

        def unwatch() -> None:
            self._watched.pop(key, None)

        return unwatch

    @property
    def watching(self) -> int:
        return len(self._watched)

    def _poll(self) -> None:
        self._timer = None
        gone = [key for key, (transport, _) in self._watched.items() if transport.is_closing()]
        for key in gone:
            _, callback = self._watched.pop(key)
            callback()
        if self._watched:
            self._timer = self._loop.call_later(POLL_SECONDS, self._poll)


_pollers: dict[asyncio.AbstractEventLoop, _Poller] = {}


def _poller() -> _Poller:
    loop = asyncio.get_running_loop()
    poller = _pollers.get(loop)
    if poller is None:
        for old in [old for old in _pollers if old.is_closed()]:  # loops of finished tests or runs
            del _pollers[old]
        poller = _pollers[loop] = _Poller(loop)
    return poller


def watch_departure(request: web.Request, callback: Callable[[], None]) -> Unwatch:
    """Call ``callback`` once when the request's connection closes (at once if it has already);
    the returned function stops watching."""
    lost = getattr(request.protocol, "lost", None)
    if isinstance(lost, asyncio.Future):  # shared by the connection: a callback, never a cancel

        def on_lost(_: asyncio.Future[None]) -> None:
            callback()

        def unwatch() -> None:
            lost.remove_done_callback(on_lost)

        lost.add_done_callback(on_lost)
        return unwatch
    transport = request.transport
    if transport is None or transport.is_closing():
        return asyncio.get_running_loop().call_soon(callback).cancel
    return _poller().watch(transport, callback)


def watching() -> int:
    """How many requests the running loop's poller watches now."""
    poller = _pollers.get(asyncio.get_running_loop())
    return 0 if poller is None else poller.watching
