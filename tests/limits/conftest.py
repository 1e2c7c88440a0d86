"""The service as ``msev15 serve`` runs it (GuardedRunner on a loopback port), for connection tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from msev15.app import create_app
from msev15.server.connections import CONNECTIONS, ConnectionLimits, GuardedRunner
from tests.conftest import make_settings


@dataclass
class Served:
    app: web.Application
    host: str
    port: int
    runner: GuardedRunner

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def raw(self, data: bytes, timeout: float = 5.0) -> bytes:
        """Send ``data`` on a new connection; everything the server sends until it closes."""
        reader, writer = await asyncio.open_connection(self.host, self.port)
        try:
            writer.write(data)
            await writer.drain()
            return await asyncio.wait_for(reader.read(), timeout)
        finally:
            writer.close()


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Served]]]:
    runners: list[web.AppRunner] = []

    async def start(**overrides: Any) -> Served:
        settings = make_settings(tmp_path, **overrides)
        app = await create_app(settings)
        runner = GuardedRunner(app, ConnectionLimits(settings.http_header_timeout_seconds,
                                                     settings.http_max_connections),
                               app[CONNECTIONS], access_log=None, keepalive_timeout=settings.keepalive_seconds)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        return Served(app, "127.0.0.1", port, runner)

    yield start
    for runner in reversed(runners):
        await runner.cleanup()
