"""The real service on a loopback port, served from its own event loop in a background thread.

For clients that block (schemathesis drives ``requests``), and for counting the service's own
asyncio tasks apart from those of the fakes a test runs in its loop. The thread runs
``asyncio.run``: ``create_app`` builds every loop-bound object on that loop, and stopping runs
aiohttp's normal cleanup there before the loop closes.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, TypeVar

from aiohttp import web

from msev15.app import create_app
from msev15.config import Settings
from msev15.server.connections import CONNECTIONS, ConnectionLimits, GuardedRunner

START_TIMEOUT = 20.0
_T = TypeVar("_T")


class LiveService:
    """``url`` is ``http://127.0.0.1:<port>``; ``app`` is the running application."""

    def __init__(self, settings: Settings, **overrides: Any) -> None:
        self._settings = settings
        self._overrides = overrides
        self._thread = threading.Thread(target=self._run, name="live-service", daemon=True)
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._error: Exception | None = None
        self.app: web.Application | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except Exception as exc:  # re-raised in the thread that starts or stops us
            self._error = exc
        finally:
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self.app = await create_app(self._settings, **self._overrides)
        # The runner msev15 serve uses: parser errors and connection limits answer as in production.
        limits = ConnectionLimits(self._settings.http_header_timeout_seconds, self._settings.http_max_connections)
        runner = GuardedRunner(self.app, limits, self.app[CONNECTIONS], access_log=None, shutdown_timeout=2.0,
                               keepalive_timeout=self._settings.keepalive_seconds)
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self.port = runner.addresses[0][1]
            self._ready.set()
            await self._stopping.wait()
        finally:
            await runner.cleanup()

    async def run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        """Await ``coro`` on the service's loop from another loop (to read its state)."""
        assert self._loop is not None, "the service is not running"
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self._loop))

    def start(self) -> LiveService:
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT):
            self.stop()
            raise TimeoutError(f"the service did not start within {START_TIMEOUT}s")
        if self._error is not None:
            raise RuntimeError("the service failed to start") from self._error
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stopping is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(START_TIMEOUT)
        assert not self._thread.is_alive(), "the service thread did not stop"
        if self._error is not None:
            raise RuntimeError("the service failed while stopping") from self._error


@contextmanager
def live_service(settings: Settings, **overrides: Any) -> Iterator[LiveService]:
    service = LiveService(settings, **overrides).start()
    try:
        yield service
    finally:
        service.stop()


@asynccontextmanager
async def running_service(settings: Settings, **overrides: Any) -> AsyncIterator[LiveService]:
    """``live_service`` for async tests: starting and stopping never block the caller's loop."""
    service = await asyncio.to_thread(LiveService(settings, **overrides).start)
    try:
        yield service
    finally:
        await asyncio.to_thread(service.stop)
