"""Pure helpers of ``benchmarks/bench_throughput.py`` (no I/O): percentiles, the queue-depth
trend, whether the queue grows, capacity and the issue's sizing requirement.

The requirement (issue 14): the queue must not grow at 2,000 CT series a day per 2 CPU cores.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

#: the issue's requirement: CT series a day the node must keep up with, per 2 CPU cores
REQUIRED_SERIES_PER_DAY_PER_2_CORES = 2000.0
#: a trend below this share of the arrival rate (or below GROWTH_FLOOR_PER_HOUR) is noise, not
#: growth: a queue that keeps up goes up and down by a series or two around a constant level
GROWTH_SHARE = 0.1
GROWTH_FLOOR_PER_HOUR = 1.0


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0..100) with linear interpolation between the closest ranks
    (numpy's default); None for no values."""
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile {q} outside 0..100")
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def slope_per_hour(samples: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of ``(seconds, depth)`` samples, in depth per hour; None with fewer
    than two distinct times."""
    if len(samples) < 2:
        return None
    n = len(samples)
    mt = sum(t for t, _ in samples) / n
    md = sum(d for _, d in samples) / n
    stt = sum((t - mt) ** 2 for t, _ in samples)
    if stt == 0.0:
        return None
    std = sum((t - mt) * (d - md) for t, d in samples)
    return std / stt * 3600.0


def queue_grows(slope: float | None, arrival_per_hour: float) -> bool | None:
    """The queue grows at this arrival rate: its trend is above the noise threshold
    (``GROWTH_SHARE`` of the arrival rate, at least ``GROWTH_FLOOR_PER_HOUR``). None when the
    trend is unknown."""
    if slope is None:
        return None
    return slope > max(GROWTH_FLOOR_PER_HOUR, GROWTH_SHARE * arrival_per_hour)


def required_per_hour(cores: int) -> float:
    """The requirement's arrival rate for a machine with ``cores`` CPU cores (series/hour)."""
    return REQUIRED_SERIES_PER_DAY_PER_2_CORES * cores / 2.0 / 24.0


def per_day_per_2_cores(per_hour: float, cores: int) -> float:
    """A rate measured on ``cores`` CPU cores as series a day per 2 cores."""
    return per_hour * 24.0 * 2.0 / cores


def completion_rate_per_hour(first_seconds: float, finished: Sequence[float]) -> float | None:
    """Series completed per hour from ``first_seconds`` (the first job claimed) to the last
    finish; None without a finish after the start."""
    if not finished:
        return None
    span = max(finished) - first_seconds
    return None if span <= 0 else len(finished) / span * 3600.0


def service_capacity_per_hour(analysis_seconds: Sequence[float], workers: int) -> float | None:
    """What ``workers`` busy workers finish per hour at the mean analysis time measured (an
    upper bound when workers often ran alone, i.e. faster than when all are busy at once)."""
    if not analysis_seconds:
        return None
    mean = sum(analysis_seconds) / len(analysis_seconds)
    return None if mean <= 0 else workers * 3600.0 / mean


def capacity_per_hour(grew: bool | None, completion: float | None, service: float | None
                      ) -> tuple[float | None, str]:
    """The configuration's capacity and what it rests on: when the queue grew the workers were
    saturated, so the completion rate is the capacity (measured); otherwise the node kept up
    and only the analysis times tell how much more it could take (estimated)."""
    if grew and completion is not None:
        return completion, "measured: completion rate while the queue grew (saturated)"
    return service, "estimated: workers x 3600 / mean analysis time (the queue did not grow)"


def requirement_verdict(grew: bool | None, arrival_per_hour: float,
                        capacity_per_2_cores: float | None, cores: int) -> str:
    """Whether this run shows the requirement met: the queue must not grow at
    ``REQUIRED_SERIES_PER_DAY_PER_2_CORES`` (scaled to ``cores``)."""
    required = required_per_hour(cores)
    cap = "unknown" if capacity_per_2_cores is None else f"{capacity_per_2_cores:.0f}"
    at_required = arrival_per_hour >= required * 0.999
    if grew is None:
        return "unknown (too few queue-depth samples)"
    if grew:
        # growth below or at the required rate fails it; above it, the (measured) capacity
        # decides
        met = arrival_per_hour > required * 1.001 and capacity_per_2_cores is not None and (
            capacity_per_2_cores >= REQUIRED_SERIES_PER_DAY_PER_2_CORES)
        return (f"{'met' if met else 'NOT met'}: the queue grew at {arrival_per_hour:.1f} "
                f"series/hour (requirement {required:.1f}/h on {cores} cores); capacity {cap} "
                "series/day per 2 cores")
    if at_required:
        return (f"met: the queue did not grow at {arrival_per_hour:.1f} series/hour, at or "
                f"above the requirement's {required:.1f}/h on {cores} cores")
    est_met = capacity_per_2_cores is not None and capacity_per_2_cores >= (
        REQUIRED_SERIES_PER_DAY_PER_2_CORES)
    return (f"not shown by this run (arrival {arrival_per_hour:.1f}/h is below the "
            f"requirement's {required:.1f}/h on {cores} cores); the estimated capacity {cap} "
            f"series/day per 2 cores is {'above' if est_met else 'below'} it")
