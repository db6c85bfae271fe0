"""Disc cuts in a fused body column at an open (field-of-view) end."""

from __future__ import annotations

import numpy as np

from osteo_node.pipeline.ct.fused_columns import disc_cuts as _cuts

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


# Disc-likeness profile of the top body column of the example CT written as a 1 mm DICOM series
# (L1 plus the lower third of T12, cut by the field of view), recorded from a real run of a
# candidate model: strong L1/L2 disc at the bottom, a weak dip mid-L1 (0.48), the T12/L1 disc
# at 11-13, the open top at 14.
REAL_TOP_COLUMN = [2.76, 2.24, 1.36, 0.46, 0.0, 0.03, 0.48, 0.0, 0.0, 0.01, 0.08, 1.53, 1.79,
                   1.32, 0.37]


def test_a_weak_dip_is_not_traded_for_the_strong_disc() -> None:
    """Summing raw scores preferred two cuts (0.48 + 1.32 = 1.80) over the T12/L1 disc's peak
    (1.79): L1 was cut in half and T12 left as one slice that was then lost. Each cut now
    costs the column's median score."""
    score = np.array(REAL_TOP_COLUMN)
    assert _cuts(85, score, 10.4, (False, True)) == [97]


def test_a_short_column_at_the_field_of_view_edge_is_split_at_a_clear_disc() -> None:
    """45 mm (L1 + partial T12) is shorter than SPLIT_FACTOR pitches, but it is cut by the field
    of view and shows a clear disc: two bodies, not one."""
    from osteo_node.pipeline.ct.instances import separate

    n_k = 16
    classes = np.zeros((n_k, 12, 12), dtype=np.uint8)
    hu = np.full((n_k, 12, 12), 40.0, dtype=np.float32)
    disc = np.zeros((n_k, 12, 12), dtype=np.float32)
    classes[1:, 3:9, 3:9] = 1  # one fused column from k=1 to the top slice
    hu[1:, 3:9, 3:9] = 200.0
    classes[12, 3:9, 3:9] = 3  # the disc between them, seen by the network
    disc[12, 3:9, 3:9] = 0.95
    hu[12, 3:9, 3:9] = 90.0
    classes[12, 4:8, 4:8] = 1  # thin bridge of "body" keeps the column connected
    inst = separate(classes, hu, disc, 3.0, body_value=1, posterior_value=2, sacrum_value=4)
    assert len(inst.bodies) == 2
    top = max(inst.bodies, key=lambda b: b.centroid_kji[0])
    assert top.k_range[0] >= 13 and top.touches_fov
