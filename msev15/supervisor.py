"""Supervised reference MCP servers for ``msev15 serve --with-reference-servers`` (``make run``).

The complaints server (``msev15 complaints-mcp``) and the escalation server (``msev15
escalation-mcp``) run as child processes on free loopback ports. Each has one owner task that
starts it, restarts it with capped exponential backoff when it dies, and on :meth:`stop` sends
SIGTERM, then SIGKILL after a bound. The service reaches them through MCP_SERVER_URL and
ESCALATION_MCP_URL (:meth:`Supervisor.settings`).

Both children require a bearer token and the service sends it, so no other local process can use
the servers without it (the complaints server would otherwise let any caller read any tenant's
complaints; the escalation server would send mail for anyone). The token is the user's
MCP_AUTH_TOKEN when set (stable across runs, for the MCP Inspector or an SDK client), else one
generated for the run; the banner says which, and prints a generated one so it can be used.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from msev15.config import Settings
from msev15.mcpkit.runner import STOP_WITH_PARENT_ENV

log = logging.getLogger("app.supervisor")

HOST = "127.0.0.1"
STOP_SECONDS = 5.0
READY_SECONDS = 20.0
BACKOFF_FIRST, BACKOFF_MAX = 0.5, 30.0
STABLE_SECONDS = 30.0  # a child that ran this long starts again with the first backoff


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@dataclass
class Child:
    """One supervised server: how to start it and what it is doing."""

    name: str
    command: str
    args: list[str]
    port: int
    env: dict[str, str] = field(default_factory=dict)
    proc: asyncio.subprocess.Process | None = None
    restarts: int = 0

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/mcp"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.returncode is None else None

    async def start(self) -> None:
        # stdin is a pipe we never write to: it closes when this process exits, however it exits,
        # and the child stops then (mcpkit.runner), so a killed service leaves no orphan server.
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "msev15", self.command, *self.args,
            env={**os.environ, **self.env, STOP_WITH_PARENT_ENV: "1"},
            stdin=asyncio.subprocess.PIPE, start_new_session=True)  # our terminal's Ctrl-C is ours to pass on
        log.info("Started %s (pid %s) at %s", self.name, self.proc.pid, self.url)

    async def stop(self, bound: float = STOP_SECONDS) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), bound)
        except TimeoutError:
            log.warning("%s did not stop within %.0f s; killing it", self.name, bound)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


class Supervisor:
    """Owns the reference servers: ``await start()``, then ``await stop()`` (always, in finally)."""

    def __init__(self, data_dir: str | Path = "./data", token: str = "") -> None:
        data = Path(data_dir)
        self.children = [
            Child("Complaints MCP", "complaints-mcp", [], free_port()),
            Child("Escalation MCP", "escalation-mcp", [], free_port()),
        ]
        complaints, escalation = self.children
        complaints.args = ["--host", HOST, "--port", str(complaints.port), "--db", str(data / "complaints.db")]
        escalation.args = ["--host", HOST, "--port", str(escalation.port)]
        self.token_from_env = bool(token)
        self.token = token or secrets.token_urlsafe(32)
        for child in self.children:
            child.env["MCP_AUTH_TOKEN"] = self.token
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()

    def settings(self, settings: Settings) -> Settings:
        """The service's settings pointed at the children."""
        complaints, escalation = self.children
        return settings.replace(mcp_server_url=complaints.url, escalation_mcp_url=escalation.url,
                                mcp_auth_token=self.token, escalation_mcp_auth_token=self.token)

    async def start(self) -> None:
        """Start every child and wait (bounded) until each accepts connections."""
        for child in self.children:
            await child.start()
            self._tasks.append(asyncio.create_task(self._watch(child), name=f"supervise:{child.command}"))
        await asyncio.gather(*(self._wait_listening(c) for c in self.children))

    async def _wait_listening(self, child: Child) -> None:
        deadline = time.monotonic() + READY_SECONDS
        while time.monotonic() < deadline and not self._stopping.is_set():
            try:
                _, writer = await asyncio.open_connection(HOST, child.port)
            except OSError:
                await asyncio.sleep(0.1)  # polling a port that is not open yet, with a deadline
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return
        log.warning("%s is not listening after %.0f s; the service starts without it for now",
                    child.name, READY_SECONDS)

    async def _watch(self, child: Child) -> None:
        """Restart the child whenever it exits, with capped exponential backoff."""
        delay = BACKOFF_FIRST
        while True:
            assert child.proc is not None
            started = time.monotonic()
            code = await child.proc.wait()
            if self._stopping.is_set():
                return
            if time.monotonic() - started >= STABLE_SECONDS:
                delay = BACKOFF_FIRST
            log.warning("%s exited with code %s; restarting in %.1f s", child.name, code, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            if self._stopping.is_set():
                return
            delay = min(delay * 2, BACKOFF_MAX)
            child.restarts += 1
            try:
                await child.start()
            except OSError:
                log.exception("Could not restart %s", child.name)
                return

    async def stop(self) -> None:
        """Stop watching, then SIGTERM each child (SIGKILL after STOP_SECONDS)."""
        self._stopping.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(child.stop() for child in self.children))

    def banner_lines(self) -> list[str]:
        lines = ["Supervised reference servers:"]
        for child in self.children:
            lines.append(f"  • {child.name}: {child.url} (pid {child.pid}, restarts {child.restarts})")
        if self.token_from_env:
            lines.append("  • Token: MCP_AUTH_TOKEN (send 'Authorization: Bearer $MCP_AUTH_TOKEN')")
        else:
            lines.append(f"  • Token: {self.token} (this run only; send 'Authorization: Bearer <token>', "
                         "or set MCP_AUTH_TOKEN for a stable one)")
        return lines
