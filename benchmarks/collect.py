"""What a run collects: measurements by scenario, targets with PASS/MISS, memory curves, notes."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

MAX_CURVE_POINTS = 300


@dataclass(frozen=True, slots=True)
class Target:
    """One target of the issue: ``value op limit`` passes; a missing value is a MISS."""

    id: str
    text: str
    value: float | None
    op: str
    limit: float
    unit: str = ""

    def __post_init__(self) -> None:
        if self.op not in (">=", "<=", "=="):
            raise ValueError(f"op must be >=, <= or ==, got {self.op!r}")

    @property
    def passed(self) -> bool:
        if self.value is None or (isinstance(self.value, float) and math.isnan(self.value)):
            return False
        if self.op == ">=":
            return self.value >= self.limit
        if self.op == "<=":
            return self.value <= self.limit
        return self.value == self.limit

    @property
    def status(self) -> str:
        return "PASS" if self.passed else "MISS"

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "target": self.text, "value": self.value, "op": self.op, "limit": self.limit,
                "unit": self.unit, "status": self.status}


@dataclass
class Collector:
    started: float = field(default_factory=time.perf_counter)
    scenarios: dict[str, dict[str, Any]] = field(default_factory=dict)
    targets: list[Target] = field(default_factory=list)
    curves: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    reported: list[dict[str, Any]] = field(default_factory=list)

    def report(self, id: str, text: str, value: float | None, unit: str = "") -> None:
        """A measurement shown without PASS/MISS: an absolute time on a shared machine proves little."""
        if isinstance(value, float):
            value = round(value, 4)
        self.reported.append({"id": id, "text": text, "value": value, "unit": unit})
        print(f"  [REPORT] {id} {text}: {value} {unit}", flush=True)

    def target(self, id: str, text: str, value: float | None, op: str, limit: float, unit: str = "") -> Target:
        if isinstance(value, float):
            value = round(value, 4)
        found = Target(id, text, value, op, limit, unit)
        self.targets.append(found)
        print(f"  [{found.status}] {id} {text}: {found.value} {unit} (limit {op} {limit:g})", flush=True)
        return found

    def curve(self, name: str, points: list[tuple[float, float]]) -> None:
        step = max(1, math.ceil(len(points) / MAX_CURVE_POINTS))
        self.curves[name] = points[::step]

    def note(self, text: str) -> None:
        print(f"  note: {text}", flush=True)
        self.notes.append(text)


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator == 0:
        return None
    return round(numerator / denominator, 4)
