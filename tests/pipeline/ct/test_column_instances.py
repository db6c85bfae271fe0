"""Which runs of the column are vertebrae: the top of S1 taken for a body (pure logic on
hand-made body and sacrum maps)."""

from __future__ import annotations

import numpy as np

from osteo_node.pipeline.ct.column_instances import _below_sacrum
from osteo_node.pipeline.ct.disc_profile import BodyRun, DiscPlane

SHAPE = (140, 30, 20)


def _disc(z: float) -> DiscPlane:
    return DiscPlane(float(z), 0.0, 0.0, 0.9, 15.0, 10.0)


def _column(lowest_rows: tuple[int, int], lowest_width: int
            ) -> tuple[np.ndarray, list[BodyRun], np.ndarray]:
    """Sacrum rows 0-13 (its top just inside the lowest run); a lowest 'body' at
    ``lowest_rows`` with no disc below it, then four normal bodies (rows 20-39, 40-59, ...)
    each 14 x 14 cells in cross-section."""
    bodies = np.zeros(SHAPE, dtype=np.int16)
    lo, hi = lowest_rows
    bodies[lo: hi + 1, 8: 8 + lowest_width, 3: 3 + lowest_width] = 1
    runs = [BodyRun(lo, hi, None, _disc(hi + 0.5))]
    for i, start in enumerate(range(20, 100, 20), start=2):
        bodies[start + 1: start + 18, 8:22, 3:17] = i
        runs.append(BodyRun(start, start + 19, _disc(start - 0.5), _disc(start + 19.5)))
    sacrum = np.zeros(SHAPE, dtype=bool)
    sacrum[0:14, 5:25, 0:20] = True
    return bodies, runs, sacrum


def test_a_small_body_on_the_sacrum_without_a_disc_below_is_part_of_s1() -> None:
    bodies, runs, sacrum = _column((12, 19), 5)  # 1/9 of a body's volume, on the sacrum
    assert _below_sacrum(bodies, runs, sacrum) == {0}


def test_a_full_body_on_the_sacrum_is_kept() -> None:
    """L5 with a missed L5/S1 disc is as large as the others: a vertebra, not part of S1."""
    bodies, runs, sacrum = _column((12, 19), 14)
    bodies[12:20, 4:26, 0:20] = 1
    assert _below_sacrum(bodies, runs, sacrum) == set()


def test_a_small_lowest_body_away_from_the_sacrum_is_kept() -> None:
    bodies, runs, _ = _column((12, 19), 5)
    sacrum = np.zeros(SHAPE, dtype=bool)
    sacrum[0:6, 5:25, 0:20] = True  # the sacrum ends 6 rows below it
    assert _below_sacrum(bodies, runs, sacrum) == set()


def _frame(nz: int, edge_below: bool) -> object:
    from osteo_node.pipeline.ct.column import SpinalCanal
    from osteo_node.pipeline.ct.straighten import StraightFrame

    z = np.array([0.0, 100.0])
    canal = SpinalCanal(z, np.zeros(2), np.zeros(2), np.ones(2))
    return StraightFrame(canal=canal, z0=0.0, nz=nz, scan_edge_below=edge_below)


def test_a_small_sacrum_cut_by_the_bottom_of_the_scan_is_not_trusted() -> None:
    """6 ml of sacrum class over 15 mm: at the bottom edge of a 40 mm thoracolumbar slab (the
    held-out contrast slab: named L4, L5, S1 from it) it is not a sacrum; inside the scan
    (s0009's S1 with a held-out model) it is."""
    from osteo_node.pipeline.ct.column_instances import SACRUM, _sacrum

    def probs(lo: int, edge_below: bool) -> tuple[np.ndarray, object]:
        frame = _frame(40, edge_below)
        p = np.zeros((5, *frame.shape), dtype=np.float32)  # type: ignore[attr-defined]
        p[0] = 0.5
        p[SACRUM, lo: lo + 10, 20:36, 10:23] = 0.9  # 10 rows x 16 x 13 cells of 1.5 mm
        return p, frame

    p, frame = probs(0, True)
    assert _sacrum(p, frame) is None  # type: ignore[arg-type]
    p, frame = probs(6, True)
    assert _sacrum(p, frame) is not None  # type: ignore[arg-type]
    p, frame = probs(0, False)  # the column's own end, not the scan's: trusted
    assert _sacrum(p, frame) is not None  # type: ignore[arg-type]


def test_bodies_are_checked_against_the_column_s_own_side_line() -> None:
    """s0009 with a held-out model: a rotated spine put every body 6-22 mm to one side of the
    canal's left-right line and L4 (22 mm) was dropped. Bodies are compared with the median
    side offset of the others; one really off the column still goes."""
    from osteo_node.pipeline.ct.column_instances import ColumnInstances
    from osteo_node.pipeline.ct.column_segmentation import _on_column

    frame = _frame(120, False)
    nz, nu, nv = frame.shape  # type: ignore[attr-defined]
    centre_u = round((-35.0 + 84.0) / 1.5)  # 35 mm in front of the canal
    bodies = np.zeros((nz, nu, nv), dtype=np.int16)
    offsets_mm = [-8.0, -10.0, -15.0, -22.0, -12.0]
    for i, off in enumerate(offsets_mm):
        v = nv // 2 + round(off / 1.5)
        bodies[5 + 20 * i: 20 + 20 * i, centre_u - 6: centre_u + 6, v - 5: v + 6] = i + 1
    runs = [BodyRun(5 + 20 * i, 24 + 20 * i, None, None) for i in range(len(offsets_mm))]
    inst = ColumnInstances(runs, bodies, bodies.copy(), None, [0.9] * len(runs))
    assert _on_column(inst, frame) == [0, 1, 2, 3, 4]  # type: ignore[arg-type]
    v = nv // 2 + round(25.0 / 1.5)  # one 25 mm to the OTHER side: 37 mm off the line
    bodies[bodies == 3] = 0
    bodies[45:60, centre_u - 6: centre_u + 6, v - 5: v + 6] = 3
    inst = ColumnInstances(runs, bodies, bodies.copy(), None, [0.9] * len(runs))
    assert _on_column(inst, frame) == [0, 1, 3, 4]  # type: ignore[arg-type]
