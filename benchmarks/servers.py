"""The runner's side of a server process: start it, sample its CPU and RSS, stop it."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import psutil

ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT = 120.0  # seeding 100k sessions happens before "ready"


class ServerError(RuntimeError):
    """A server process failed to start or died."""


@dataclass(frozen=True, slots=True)
class Usage:
    """CPU seconds (user + system) and RSS bytes of a process at one instant."""

    at: float
    cpu: float
    rss: int


class ServerProcess:
    def __init__(self, label: str, proc: asyncio.subprocess.Process, stderr_path: Path, info: dict[str, Any],
                 events: dict[str, dict[str, Any]]) -> None:
        self.label = label
        self.proc = proc
        self.port: int = info["port"]
        self.nofile: int = info.get("nofile", 0)
        self.events = events
        self._stderr_path = stderr_path
        self._ps = psutil.Process(proc.pid)

    @classmethod
    async def start(cls, label: str, *args: str, cores: frozenset[int] | None = None) -> ServerProcess:
        """``python -m benchmarks.launcher *args``; returns once it listens."""
        cmd = [sys.executable, "-m", "benchmarks.launcher", "--watch-stdin", *args]
        for core in sorted(cores or ()):
            cmd += ["--cpu", str(core)]
        with tempfile.NamedTemporaryFile(prefix=f"bench-{label}-", suffix=".err", delete=False) as stderr_file:
            stderr_path = Path(stderr_file.name)
            proc = await asyncio.create_subprocess_exec(*cmd, cwd=ROOT, stdin=asyncio.subprocess.PIPE,
                                                        stdout=asyncio.subprocess.PIPE, stderr=stderr_file)
        events: dict[str, dict[str, Any]] = {}
        try:
            async with asyncio.timeout(READY_TIMEOUT):
                while "ready" not in events:
                    line = await proc.stdout.readline()  # type: ignore[union-attr]
                    if not line:
                        raise ServerError(f"{label} exited before it was ready: {_tail(stderr_path)}")
                    event = json.loads(line)
                    events[event["event"]] = event
        except BaseException:
            await _terminate(proc)
            stderr_path.unlink(missing_ok=True)
            raise
        return cls(label, proc, stderr_path, events["ready"], events)

    def usage(self) -> Usage:
        times = self._ps.cpu_times()
        return Usage(time.perf_counter(), times.user + times.system, self._ps.memory_info().rss)

    def check_alive(self) -> None:
        if self.proc.returncode is not None:
            raise ServerError(f"{self.label} died (exit {self.proc.returncode}): {_tail(self._stderr_path)}")

    def stderr_tail(self) -> str:
        return _tail(self._stderr_path)

    async def stop(self) -> int | None:
        """Stop the server; the events it printed on the way out (``gc``) land in ``events``."""
        code = await _terminate(self.proc)
        if self.proc.stdout is not None:
            for line in (await self.proc.stdout.read()).splitlines():
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                self.events[event.get("event", "?")] = event
        self._stderr_path.unlink(missing_ok=True)
        return code


async def _terminate(proc: asyncio.subprocess.Process, timeout: float = 15.0) -> int | None:
    if proc.returncode is None:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
    return proc.returncode


def _tail(path: Path, chars: int = 1500) -> str:
    try:
        return path.read_text(errors="replace")[-chars:].strip() or "(no output)"
    except OSError:
        return "(no output)"


class Sampler:
    """Samples a server's CPU and RSS every ``every`` seconds while a phase runs (one owned task)."""

    def __init__(self, server: ServerProcess, every: float = 0.25) -> None:
        self.server = server
        self.every = every
        self.samples: list[Usage] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        self.samples.append(self.server.usage())
        self._task = asyncio.create_task(self._run(), name=f"bench:sample:{self.server.label}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        try:
            self.samples.append(self.server.usage())
        except psutil.Error:
            pass

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            try:
                self.samples.append(self.server.usage())
            except psutil.Error:
                return

    def summary(self) -> dict[str, Any]:
        """CPU use over the phase (1.0 = one core busy) and the RSS at its start, end and peak."""
        first, last = self.samples[0], self.samples[-1]
        wall = max(last.at - first.at, 1e-9)
        return {
            "cpu_cores": round((last.cpu - first.cpu) / wall, 3),
            "cpu_seconds": round(last.cpu - first.cpu, 3),
            "rss_start_mib": _mib(first.rss),
            "rss_end_mib": _mib(last.rss),
            "rss_peak_mib": _mib(max(s.rss for s in self.samples)),
        }

    def curve(self, origin: float) -> list[tuple[float, float]]:
        """(seconds since ``origin``, RSS MiB) points."""
        return [(round(s.at - origin, 2), _mib(s.rss)) for s in self.samples]


def _mib(value: int) -> float:
    return round(value / 2**20, 2)
