"""The retention policy as pure functions: what may be deleted (blockers) and what a round
deletes (age, then size, oldest settled first; never unsettled data)."""

from __future__ import annotations

import pytest

from osteo_node.retention.policy import (
    AGE,
    ANALYSIS_PENDING,
    RECEIVING,
    RESULTS_UNDELIVERED,
    SIZE,
    Candidate,
    Limits,
    SeriesState,
    object_blocker,
    plan,
    series_blocker,
)

H = 3600.0


@pytest.mark.parametrize(("state", "blocker"), [
    (SeriesState(1, 0), RECEIVING),  # no job yet
    (SeriesState(2, 1, ("done",), ("sent",)), RECEIVING),  # new instances since the job
    (SeriesState(1, 1, ("queued",)), ANALYSIS_PENDING),
    (SeriesState(2, 2, ("done", "running")), ANALYSIS_PENDING),
    (SeriesState(1, 1, ("done",), ("sent", "pending")), RESULTS_UNDELIVERED),
    (SeriesState(1, 1, ("done",), ("sending",)), RESULTS_UNDELIVERED),
    (SeriesState(1, 1, ("done",), ("sent", "sent")), None),
    (SeriesState(1, 1, ("done",), ("failed",)), None),  # given up: settled
    (SeriesState(1, 1, ("failed",)), None),  # analysis failed for good: settled
    (SeriesState(1, 1, ("not_analysable",)), None),
    (SeriesState(1, 1, ("no_analyser",)), None),
])
def test_series_blocker(state: SeriesState, blocker: str | None) -> None:
    assert series_blocker(state) == blocker


def test_object_blocker() -> None:
    assert object_blocker(["sent", "failed"]) is None
    assert object_blocker(["sent", "pending"]) == RESULTS_UNDELIVERED
    assert object_blocker(["sending"]) == RESULTS_UNDELIVERED


def _c(key: str, size: int, hours_ago: float, blocker: str | None = None,
       now: float = 1000 * H) -> Candidate[str]:
    return Candidate(key, size, now - hours_ago * H, blocker)


def test_age_deletes_only_settled_candidates_old_enough() -> None:
    cands = [_c("young", 10, 1), _c("old", 10, 80), _c("old-blocked", 10, 500, RECEIVING),
             _c("boundary", 10, 72)]
    p = plan(cands, Limits(max_age_s=72 * H), 1000 * H)
    assert [(d.candidate.key, d.reason) for d in p.deletions] == [("old", AGE),
                                                                   ("boundary", AGE)]
    assert (p.total, p.settled, p.settled_count, p.count) == (40, 30, 3, 4)
    assert p.blocked == {RECEIVING: 1} and p.over_limit == 0


def test_size_deletes_oldest_settled_first_until_under_the_limit() -> None:
    cands = [_c("blocked-oldest", 100, 50, RESULTS_UNDELIVERED), _c("a", 30, 40),
             _c("b", 30, 30), _c("c", 30, 20), _c("d", 30, 10)]
    p = plan(cands, Limits(max_total_bytes=170), 1000 * H)  # total 220: 50 must go
    assert [(d.candidate.key, d.reason) for d in p.deletions] == [("a", SIZE), ("b", SIZE)]
    assert p.remaining == 160 and p.over_limit == 0


def test_age_and_size_together_and_an_unreachable_limit() -> None:
    cands = [_c("blocked", 100, 50, ANALYSIS_PENDING), _c("a", 30, 90), _c("b", 30, 30),
             _c("c", 30, 20)]
    p = plan(cands, Limits(max_age_s=72 * H, max_total_bytes=50), 1000 * H)
    assert [(d.candidate.key, d.reason) for d in p.deletions] == [
        ("a", AGE), ("b", SIZE), ("c", SIZE)]
    assert p.remaining == 100 and p.over_limit == 50  # only the unsettled one is left
    assert p.blocked == {ANALYSIS_PENDING: 1}


def test_no_limits_delete_nothing() -> None:
    p = plan([_c("a", 10, 10_000)], Limits(), 1000 * H)
    assert p.deletions == () and not Limits().any
