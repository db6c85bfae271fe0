"""Disc cuts in a fused body column at an open (field-of-view) end."""

from __future__ import annotations

import numpy as np

from osteo_node.pipeline.ct.instances import _cuts

PERIOD = 10.0  # slices


def _profile(n: int, discs: dict[int, float]) -> np.ndarray:
    score = np.zeros(n)
    for k, v in discs.items():
        score[k] = v
    return score


def test_weak_sliver_at_the_top_edge_stays_with_its_body() -> None:
    """example_ct's T12: a body reaching the top slice, a weak 'disc' one slice below the edge.
    Cutting there made a 3 mm "T11" and cost T12 its top slice."""
    score = _profile(21, {10: 0.3, 19: 0.17})
    assert _cuts(0, score, PERIOD, (False, True)) == [10]


def test_real_disc_near_the_top_edge_is_kept() -> None:
    score = _profile(21, {10: 0.3, 19: 0.9})
    assert _cuts(0, score, PERIOD, (False, True)) == [10, 19]


def test_weak_cut_is_kept_when_merging_would_make_a_body_too_tall() -> None:
    """The chest series' L1: a partial vertebra below a complete T12; merging would give one
    body longer than a pitch, so the cut stays even with weak evidence."""
    score = _profile(24, {11: 0.4, 22: 0.15})
    assert _cuts(0, score, PERIOD, (False, True)) == [11, 22]


def test_closed_ends_are_unchanged_and_offset_applies() -> None:
    score = _profile(21, {10: 0.3, 19: 0.17})
    assert _cuts(100, score, PERIOD, (False, False)) == [110]
