"""The sizes and durations of one benchmark run."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BenchConfig:
    # Scenarios 1, 2 and 5: each server is measured for ``phase_seconds`` in total, split into
    # ``rounds`` that alternate reference and service, so drifting background load hits both.
    phase_seconds: float = 8.0
    rounds: int = 2
    warmup_seconds: float = 1.5
    connections: int = 64
    tokens: int = 20
    session_every: int = 10
    max_requests: int = 2_000_000
    health_interval: float = 0.01
    ttft_seconds: float = 2.0
    ttft_max_streams: int = 2_000
    # Scenario 3: slow-model streams held open at once, then a burst of active turns.
    streams: int = 10_000
    stream_tokens: int = 3
    stream_delay: float = 5.0
    open_concurrency: int = 256
    active_turns: int = 1_000
    active_tokens: int = 20
    active_delay: float = 0.05
    # Scenario 4: sessions at scale.
    sessions: int = 100_000
    session_messages: int = 10
    history_requests: int = 3_000
    list_requests: int = 600
    deletes_per_position: int = 1_000
    lookup_seconds: float = 3.0
    # Scenario 5: start-up to healthy.
    startup_runs: int = 3
    # Scenario 6: the token relay through the real openai client.
    relay_tokens: int = 50

    def replace(self, **changes: object) -> BenchConfig:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    @classmethod
    def quick(cls) -> BenchConfig:
        """A small run (about a minute) to check the machinery; its numbers prove nothing."""
        return cls(phase_seconds=2.0, rounds=1, warmup_seconds=0.5, ttft_seconds=0.5, streams=500,
                   stream_delay=1.0, active_turns=200, sessions=5_000, history_requests=500,
                   list_requests=100, deletes_per_position=100, lookup_seconds=1.0, startup_runs=1)
