"""The pure helpers of benchmarks/bench_throughput.py: percentiles, the queue-depth trend and
what the figures say about the issue's requirement (2,000 CT series/day per 2 cores)."""

from __future__ import annotations

import pytest

from benchmarks.throughput_stats import (
    capacity_per_hour,
    completion_rate_per_hour,
    per_day_per_2_cores,
    percentile,
    queue_grows,
    required_per_hour,
    requirement_verdict,
    service_capacity_per_hour,
    slope_per_hour,
)


def test_percentile_interpolates_like_numpy() -> None:
    xs = [10.0, 1.0, 3.0, 2.0]
    assert percentile(xs, 50) == pytest.approx(2.5)
    assert percentile(xs, 95) == pytest.approx(3.0 + 0.85 * 7.0)  # numpy: 8.95
    assert percentile(xs, 0) == 1.0 and percentile(xs, 100) == 10.0
    assert percentile([4.0], 95) == 4.0
    assert percentile([], 50) is None
    with pytest.raises(ValueError):
        percentile(xs, 101)


def test_slope_of_a_growing_and_a_steady_queue() -> None:
    # one series more every 60 s: 60 per hour
    assert slope_per_hour([(t * 60.0, float(t)) for t in range(10)]) == pytest.approx(60.0)
    # a queue that keeps up: 0, 1, 0, 1, ... has no trend
    steady = [(t * 10.0, float(t % 2)) for t in range(100)]
    assert abs(slope_per_hour(steady) or 0.0) < 1.0
    assert slope_per_hour([(0.0, 1.0)]) is None
    assert slope_per_hour([(5.0, 1.0), (5.0, 2.0)]) is None


def test_queue_grows_above_the_noise_threshold() -> None:
    assert queue_grows(20.0, 83.3) is True
    assert queue_grows(5.0, 83.3) is False  # under 10 % of the arrival rate
    assert queue_grows(0.9, 2.0) is False  # under one series an hour
    assert queue_grows(-3.0, 83.3) is False
    assert queue_grows(None, 83.3) is None


def test_requirement_scaled_by_cores() -> None:
    assert required_per_hour(2) == pytest.approx(2000 / 24)
    assert 3600 / required_per_hour(2) == pytest.approx(43.2)
    assert required_per_hour(8) == pytest.approx(4 * 2000 / 24)
    assert per_day_per_2_cores(100.0, 2) == pytest.approx(2400.0)
    assert per_day_per_2_cores(100.0, 4) == pytest.approx(1200.0)


def test_capacity_measured_when_saturated_else_estimated() -> None:
    assert completion_rate_per_hour(100.0, [160.0, 220.0, 280.0]) == pytest.approx(60.0)
    assert completion_rate_per_hour(100.0, []) is None
    assert service_capacity_per_hour([30.0, 50.0], 2) == pytest.approx(180.0)
    assert service_capacity_per_hour([], 1) is None
    value, basis = capacity_per_hour(True, 60.0, 90.0)
    assert value == 60.0 and basis.startswith("measured")
    value, basis = capacity_per_hour(False, 60.0, 90.0)
    assert value == 90.0 and basis.startswith("estimated")


def test_requirement_verdict() -> None:
    at = required_per_hour(2)
    assert requirement_verdict(False, at, 2500.0, 2).startswith("met")
    assert requirement_verdict(True, at, 1500.0, 2).startswith("NOT met")
    # growing at twice the required rate with a measured capacity above it: met
    assert requirement_verdict(True, 2 * at, 2200.0, 2).startswith("met")
    assert requirement_verdict(True, 2 * at, 1800.0, 2).startswith("NOT met")
    slow = requirement_verdict(False, at / 2, 1800.0, 2)
    assert slow.startswith("not shown") and "below it" in slow
    assert requirement_verdict(None, at, None, 2).startswith("unknown")
