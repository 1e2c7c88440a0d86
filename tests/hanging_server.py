"""A real HTTP listener on loopback that accepts connections, reads every request and never
answers: an MCP server that hangs (for the pool's timeouts and breakers)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

HOST = "127.0.0.1"


@asynccontextmanager
async def hanging_server() -> AsyncIterator[tuple[str, list[int]]]:
    """A real HTTP listener that reads every request and never answers; yields its URL and a
    one-item list counting the connections it accepted."""
    accepted = [0]
    writers: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted[0] += 1
        writers.append(writer)
        while await reader.read(65536):
            pass

    server = await asyncio.start_server(swallow, HOST, 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://{HOST}:{port}/mcp", accepted
    finally:
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()
