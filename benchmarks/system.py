"""Process-level knobs the benchmark needs: file-descriptor limits and CPU pinning."""

from __future__ import annotations

import os
import resource
import socket
from dataclasses import dataclass


def raise_nofile() -> int:
    """Raise this process's open-files soft limit to its hard limit; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


@dataclass(frozen=True, slots=True)
class CpuPlan:
    """Which cores the servers and the load generator run on (None: not pinned)."""

    server: frozenset[int] | None
    client: frozenset[int] | None

    @property
    def pinned(self) -> bool:
        return self.server is not None

    def describe(self) -> str:
        if not self.pinned:
            return "not pinned (fewer than 2 usable cores)"
        return f"server on core(s) {sorted(self.server or ())}, load generator on {sorted(self.client or ())}"


def plan_cpus() -> CpuPlan:
    """Servers on the first usable core, the client on the others, when there are two or more."""
    try:
        cores = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return CpuPlan(None, None)
    if len(cores) < 2:
        return CpuPlan(None, None)
    return CpuPlan(frozenset(cores[:1]), frozenset(cores[1:]))


def pin(cores: frozenset[int] | None, pid: int = 0) -> None:
    if cores:
        os.sched_setaffinity(pid, cores)


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (for processes that need a port number up front)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]
