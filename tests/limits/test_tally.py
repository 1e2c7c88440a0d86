"""The hot-path tallies export exactly what prometheus-client's own Counter and Histogram would
for the same observations (``_created`` samples aside, which the tallies do not keep)."""

from __future__ import annotations

import random

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from msev15.events.tally import Tally, TallyCollector, TallyHistogram

BUCKETS = (0.001, 0.01, 0.1, 1, 10)


def _exposition(registry: CollectorRegistry) -> list[str]:
    return [line for line in generate_latest(registry).decode().splitlines() if "_created" not in line]


def test_tallies_export_what_prometheus_client_would() -> None:
    reference, ours = CollectorRegistry(), CollectorRegistry()
    counter = Counter("demo_requests", "Requests.", ("route", "status"), registry=reference)
    histogram = Histogram("demo_seconds", "Durations.", ("route",), buckets=BUCKETS, registry=reference)
    plain = Histogram("demo_plain_seconds", "Unlabelled.", buckets=BUCKETS, registry=reference)
    tally = Tally("demo_requests", "Requests.", ("route", "status"))
    tally_hist = TallyHistogram("demo_seconds", "Durations.", ("route",), BUCKETS)
    tally_plain = TallyHistogram("demo_plain_seconds", "Unlabelled.", (), BUCKETS)
    ours.register(TallyCollector((tally, tally_hist, tally_plain)))

    rng = random.Random(7)
    values = [*BUCKETS, 0.0, 1e-9, 99.0]  # every bound itself: "le" means value <= bound
    values += [rng.uniform(0, 20) for _ in range(300)]
    for value in values:
        route, status = rng.choice(("/a", "/b/{id}")), rng.choice(("200", "404"))
        counter.labels(route, status).inc()
        tally.inc((route, status))
        histogram.labels(route).observe(value)
        tally_hist.observe(value, (route,))
        plain.observe(value)
        tally_plain.observe(value)
    counter.labels("/a", "200").inc(2.5)
    tally.inc(("/a", "200"), 2.5)

    assert _exposition(ours) == _exposition(reference)
    assert tally_plain.count() == len(values)
    assert tally.value(("/a", "200")) == counter.labels("/a", "200")._value.get()


def test_unlabelled_series_show_zero_before_any_observation() -> None:
    registry = CollectorRegistry()
    registry.register(TallyCollector((Tally("idle", "Nothing yet."), TallyHistogram("idle_seconds", "x", (), (1,)))))
    assert registry.get_sample_value("idle_total") == 0
    assert registry.get_sample_value("idle_seconds_count") == 0
    assert registry.get_sample_value("idle_seconds_bucket", {"le": "+Inf"}) == 0


@pytest.mark.parametrize("buckets", [(), (1, 1), (2, 1)])
def test_histogram_buckets_must_increase(buckets: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="increasing"):
        TallyHistogram("bad", "Bad buckets.", (), buckets)
