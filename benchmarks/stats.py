"""Latency summaries: nearest-rank percentiles and the result of one load phase."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

PERCENTILES = (50, 95, 99)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (NaN for none)."""
    if not sorted_values:
        return math.nan
    if not 0 < q <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {q}")
    rank = math.ceil(q / 100 * len(sorted_values))
    return sorted_values[max(rank, 1) - 1]


def summarize_ms(values: Iterable[float], qs: Sequence[float] = PERCENTILES) -> dict[str, float | None]:
    """``{"p50": ms, ...}`` of values in seconds; None where there are no values."""
    ordered = sorted(values)
    return {f"p{q:g}": (round(percentile(ordered, q) * 1000, 3) if ordered else None) for q in qs}


@dataclass(frozen=True)
class LoadResult:
    """What one load phase measured. Latencies and times to first data are in seconds."""

    completed: int
    duration: float
    latencies: tuple[float, ...]
    first_data: tuple[float, ...] = ()
    errors: Counter[str] = field(default_factory=Counter)
    peak_open: int = 0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def rate(self) -> float:
        return self.completed / self.duration if self.duration > 0 else 0.0

    def latency_ms(self) -> dict[str, float | None]:
        return summarize_ms(self.latencies)

    def first_data_ms(self) -> dict[str, float | None]:
        return summarize_ms(self.first_data)

    def summary(self) -> dict[str, Any]:
        """The JSON-ready numbers (no raw samples)."""
        out: dict[str, Any] = {
            "completed": self.completed,
            "errors": self.error_count,
            "duration_s": round(self.duration, 3),
            "rate_per_s": round(self.rate, 1),
            "latency_ms": self.latency_ms(),
        }
        if self.first_data:
            out["first_data_ms"] = self.first_data_ms()
        if self.errors:
            out["error_kinds"] = dict(self.errors.most_common(5))
        if self.peak_open:
            out["peak_open"] = self.peak_open
        return out

    @classmethod
    def merge(cls, parts: Sequence[LoadResult]) -> LoadResult:
        """One result of several rounds of the same phase (their durations add up)."""
        errors: Counter[str] = Counter()
        for part in parts:
            errors.update(part.errors)
        return cls(
            completed=sum(p.completed for p in parts),
            duration=sum(p.duration for p in parts),
            latencies=tuple(x for p in parts for x in p.latencies),
            first_data=tuple(x for p in parts for x in p.first_data),
            errors=errors,
            peak_open=max((p.peak_open for p in parts), default=0),
        )
