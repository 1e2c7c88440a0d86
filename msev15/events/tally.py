"""Counters and histograms for the hot path, exported through prometheus-client at scrape time.

prometheus-client's own metrics are made for threads: each ``inc``/``observe`` takes a lock, and
``labels()`` builds and looks up its key under another. The service counts from one event loop
thread, and the scrape runs on that thread too, so plain ints in dicts are exact here and cost a
dict update. :class:`TallyCollector` turns them into the same families (``_total`` counters,
``_bucket``/``_count``/``_sum`` histograms) when ``/metrics`` is read.

Label values must come from bounded sets (route templates, outcomes, capped tenants): every
distinct combination is a series kept for the life of the process.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Sequence
from typing import Any

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

Labels = tuple[str, ...]


class Tally:
    """A counter with labels: ``tally.inc(("GET", "200"))``."""

    __slots__ = ("name", "help", "labelnames", "values")

    def __init__(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> None:
        self.name = name  # without the _total suffix, as prometheus-client's Counter takes it
        self.help = help_text
        self.labelnames = tuple(labelnames)
        self.values: dict[Labels, float] = {} if labelnames else {(): 0}  # unlabelled: shown from the start

    def inc(self, labels: Labels = (), amount: float = 1) -> None:
        values = self.values
        values[labels] = values.get(labels, 0) + amount

    def value(self, labels: Labels = ()) -> float:
        return self.values.get(labels, 0)

    def family(self) -> CounterMetricFamily:
        family = CounterMetricFamily(self.name, self.help, labels=self.labelnames)
        for labels, value in self.values.items():
            family.add_metric(labels, value)
        return family


class _Series:
    __slots__ = ("counts", "sum")

    def __init__(self, size: int) -> None:
        self.counts = [0] * size  # per bucket, not cumulative; the last one is +Inf
        self.sum = 0.0


class TallyHistogram:
    """A histogram with labels: ``hist.observe(0.012, ("/api/v1/chat", "POST"))``."""

    __slots__ = ("name", "help", "labelnames", "bounds", "series")

    def __init__(self, name: str, help_text: str, labelnames: Sequence[str] = (),
                 buckets: Sequence[float] = ()) -> None:
        if list(buckets) != sorted(set(buckets)) or not buckets:
            raise ValueError("buckets must be a non-empty increasing sequence")
        self.name = name
        self.help = help_text
        self.labelnames = tuple(labelnames)
        self.bounds = tuple(float(b) for b in buckets)
        self.series: dict[Labels, _Series] = {} if labelnames else {(): _Series(len(self.bounds) + 1)}

    def observe(self, value: float, labels: Labels = ()) -> None:
        series = self.series.get(labels)
        if series is None:
            series = self.series[labels] = _Series(len(self.bounds) + 1)
        series.counts[bisect_left(self.bounds, value)] += 1  # bucket "le" bound: value <= bound
        series.sum += value

    def count(self, labels: Labels = ()) -> int:
        series = self.series.get(labels)
        return 0 if series is None else sum(series.counts)

    def family(self) -> HistogramMetricFamily:
        family = HistogramMetricFamily(self.name, self.help, labels=self.labelnames)
        for labels, series in self.series.items():
            running, buckets = 0, []
            for bound, count in zip((*self.bounds, float("inf")), series.counts, strict=True):
                running += count
                buckets.append((floatToGoString(bound), running))  # type: ignore[no-untyped-call]
            family.add_metric(list(labels), buckets, series.sum)
        return family


class TallyCollector(Collector):
    """Exports tallies (registered with ``registry.register(TallyCollector(...))``)."""

    def __init__(self, metrics: Iterable[Tally | TallyHistogram]) -> None:
        self._metrics = tuple(metrics)

    def collect(self) -> Iterable[Any]:
        return [metric.family() for metric in self._metrics]

    def describe(self) -> Iterable[Any]:
        return []
