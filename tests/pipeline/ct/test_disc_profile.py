"""Discs as planes and bodies between them, with the body-height prior (pure logic).

The inputs are hand-made disc-probability columns (the test is about the logic that turns a
network's output into bodies, not about the network)."""

from __future__ import annotations

import numpy as np

from osteo_node.pipeline.ct.disc_profile import (
    WEAK_DISC_P,
    GapEvidence,
    bodies_between,
    column_rows,
    find_discs,
)

STEP = 1.5
NU, NV = 40, 21


def column(discs: list[tuple[float, float]], nz: int = 200, tilt: float = 0.0
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Disc probability [z, u, v] with discs at rows ``z`` of ``strength`` (probability), the
    column mask (u 5..35, all v; from one body below the first disc to one body above the last,
    as a real column ends) and the column area per row."""
    p = np.zeros((nz, NU, NV), dtype=np.float32)
    zz = np.arange(nz)[:, None, None]
    uu = np.arange(NU)[None, :, None]
    for z, strength in discs:
        centre = z + tilt * (uu - 20)
        sel = (np.abs(zz - centre) <= 1.5) & (uu >= 5) & (uu <= 35)
        p[np.broadcast_to(sel, p.shape)] = strength
    mask = np.zeros_like(p, dtype=bool)
    first, last = min(z for z, _ in discs), max(z for z, _ in discs)
    mask[max(0, int(first) - 19): int(last) + 20, 5:36, :] = True
    area = mask.sum(axis=(1, 2)).astype(np.float64) * STEP * STEP
    return p, mask, area


def runs_for(discs: list[tuple[float, float]], **kw: float) -> list[tuple[int, int]]:
    p, mask, area = column(discs, **kw)
    planes = find_discs(p, mask, area, (20.0, 10.0), STEP)
    rows = column_rows(area)
    assert rows is not None
    body = np.ones(p.shape[0])
    return [(r.lo, r.hi) for r in bodies_between(planes, rows, body, STEP)]


def test_regular_column_gives_one_body_between_each_pair_of_discs() -> None:
    discs = [(z, 0.9) for z in (20, 40, 60, 80, 100, 120, 140, 160, 180)]
    runs = runs_for(discs)
    assert len(runs) == 10
    inner = runs[1:-1]
    assert all(abs((hi - lo + 1) - 20) <= 1 for lo, hi in inner)  # disc centre to disc centre


def test_tilted_discs_are_followed() -> None:
    """Discs tilted by lordosis: a plane per disc, bodies still one per gap."""
    p, mask, area = column([(z, 0.9) for z in (30, 60, 90, 120, 150)], tilt=0.6)
    planes = find_discs(p, mask, area, (20.0, 10.0), STEP)
    assert len(planes) == 5
    assert all(abs(d.du - 0.6) < 0.1 and abs(d.dv) < 0.1 for d in planes)


def test_a_faint_disc_is_used_where_the_height_prior_asks_for_it() -> None:
    """A thin thoracic disc the network barely saw (probability just above the disc threshold
    only in part of the column) is accepted because the gap around it is twice as tall."""
    p, mask, area = column([(z, 0.9) for z in (20, 40, 60, 100, 120, 140)])
    zz = np.arange(p.shape[0])[:, None, None]
    uu = np.arange(NU)[None, :, None]
    faint = (np.abs(zz - 80) <= 1) & (uu >= 16) & (uu <= 20)
    p[np.broadcast_to(faint, p.shape)] = 0.5  # a small faint piece
    planes = find_discs(p, mask, area, (20.0, 10.0), STEP)
    rows = column_rows(area)
    assert rows is not None
    runs = bodies_between(planes, rows, np.ones(p.shape[0]), STEP)
    assert any(abs(r.lower.z0 - 80) < 2 for r in runs if r.lower is not None)
    assert not any(r.blind_lower or r.blind_upper for r in runs)


def test_two_bodies_without_any_disc_are_split_blind() -> None:
    """No disc at all where the spacing says two bodies: a blind split, its endplates marked
    as not resolved (no heights there)."""
    p, mask, area = column([(z, 0.9) for z in (20, 40, 60, 100, 120, 140)])
    planes = find_discs(p, mask, area, (20.0, 10.0), STEP)
    rows = column_rows(area)
    assert rows is not None
    body = np.ones(p.shape[0])
    body[78:83] = 0.2  # the narrowest part of the merged run
    runs = bodies_between(planes, rows, body, STEP)
    blind = [r for r in runs if r.blind_lower or r.blind_upper]
    assert len(blind) == 2 and len(runs) == 8


def test_a_short_fractured_body_between_clear_discs_is_kept() -> None:
    """A crushed body (half the height of its neighbours) keeps its clear discs: not joined."""
    runs = runs_for([(z, 0.9) for z in (20, 40, 60, 70, 90, 110, 130)])
    heights = [hi - lo + 1 for lo, hi in runs]
    assert len(runs) == 8
    assert min(heights[1:-1]) < 10


def test_a_weak_spurious_disc_inside_a_body_is_joined() -> None:
    """A 'disc' across part of the middle of a body (a fracture line, a basivertebral vein), on
    both sides of which the gaps are half the usual: one body."""
    p, mask, area = column([(z, 0.9) for z in (20, 40, 60, 80, 100, 120)])
    zz = np.arange(p.shape[0])[:, None, None]
    uu = np.arange(NU)[None, :, None]
    part = (np.abs(zz - 90) <= 1) & (uu >= 8) & (uu <= 20)  # 40 % of the cross-section
    p[np.broadcast_to(part, p.shape)] = 0.9
    planes = find_discs(p, mask, area, (20.0, 10.0), STEP)
    assert len(planes) == 7  # seen...
    rows = column_rows(area)
    assert rows is not None
    runs = bodies_between(planes, rows, np.ones(p.shape[0]), STEP)
    assert len(runs) == 7  # ...and joined


def test_a_disc_tilted_unlike_its_neighbours_is_only_a_faint_candidate() -> None:
    """A steep piece of disc class through a body (s0009's T12 with the first sagittal model:
    48 degrees against 10 degrees for the discs around it) does not split the body."""
    p, mask, area = column([(z, 0.9) for z in (20, 40, 60, 80, 100)])
    zz = np.arange(p.shape[0])[:, None, None]
    uu = np.arange(NU)[None, :, None]
    steep = (np.abs(zz - (70 - 1.1 * (uu - 20))) <= 1) & (uu >= 17) & (uu <= 23)
    p[np.broadcast_to(steep, p.shape)] = 0.9
    planes = find_discs(p, mask, area, (20.0, 10.0), STEP)
    assert len(planes) == 6
    rows = column_rows(area)
    assert rows is not None
    runs = bodies_between(planes, rows, np.ones(p.shape[0]), STEP)
    assert len(runs) == 6


def test_bodies_beyond_the_last_disc_seen_are_split_too() -> None:
    """The network saw no disc in the last 60 rows of the column (s0003's upper thorax with a
    held-out model: T1-T4 came out as one body): the end run is three periods long, so it is
    split (blind, at the clearest endplate pair of the image's own profile)."""
    p, mask, area = column([(z, 0.9) for z in (20, 40, 60, 80, 100)], nz=200)
    mask[:, :, :] = False
    mask[1:161, 5:36, :] = True  # the column goes on to row 160
    area = mask.sum(axis=(1, 2)).astype(np.float64) * STEP * STEP
    planes = find_discs(p, mask, area, (20.0, 10.0), STEP)
    rows = column_rows(area)
    assert rows is not None
    hu = np.full(p.shape[0], 150.0)
    for z in (120, 140):  # endplates on both sides of the discs the network missed
        hu[z - 2], hu[z + 2], hu[z - 1: z + 2] = 500.0, 500.0, 60.0
    runs = bodies_between(planes, rows, np.ones(p.shape[0]), STEP, GapEvidence(hu))
    assert len(runs) == 8
    cuts = sorted(r.lower.z0 for r in runs if r.lower is not None and r.lower.blind)
    assert [round(c) for c in cuts] == [120, 140]


def test_one_disc_seen_twice_is_one_disc() -> None:
    """Two strong disc pieces 5 mm apart (one disc at two tilts; s0003's C5 came out as two
    slivers): no body fits between them, they are one disc."""
    runs = runs_for([(z, 0.9) for z in (20, 40, 60, 63, 80, 100)])
    assert len(runs) == 6


def test_a_missed_degenerate_disc_is_cut_where_the_network_sees_it_faintly() -> None:
    """A narrowed disc with sclerotic endplates (s0009's L4/L5 with a held-out model): no disc
    piece above threshold and no dark row between bright endplates, the brightest pair lies
    elsewhere in the gap; the cut goes to the peak of the cross-section's mean disc
    probability, not to the image's clearest endplate pair."""
    p, mask, area = column([(z, 0.9) for z in (20, 40, 60, 100, 120, 140)])
    planes = find_discs(p, mask, area, (20.0, 10.0), STEP)
    rows = column_rows(area)
    assert rows is not None
    hu = np.full(p.shape[0], 150.0)
    hu[72], hu[76], hu[73:76] = 500.0, 500.0, 60.0  # an endplate-like pair at 74
    share = np.zeros(p.shape[0])
    share[79:84] = [0.1, 0.2, 0.3, 0.2, 0.1]  # the network's faint disc at 81
    cut = [r.lower.z0 for r in bodies_between(planes, rows, np.ones(p.shape[0]), STEP,
                                               GapEvidence(hu, share))
           if r.lower is not None and r.lower.blind]
    assert [round(c) for c in cut] == [81]
    without = [r.lower.z0 for r in bodies_between(planes, rows, np.ones(p.shape[0]), STEP,
                                                   GapEvidence(hu))
               if r.lower is not None and r.lower.blind]
    assert [round(c) for c in without] == [74]  # the image's own cue when the network has none


def test_disc_like_signal_where_the_scan_edge_cuts_the_column_is_no_strong_disc() -> None:
    """The scan's edge cuts the column obliquely (the example CT tilted 8 degrees, v4 recipe
    network): the last rows hold only a shrinking part of the column, and a piece of disc
    class there covers most of that part but a small share of the column. Compared with the
    rows next to it alone it looked like a clear disc and made a 12 mm "crushed" body; against
    the column's cross-section it is only a faint candidate, and the end run is left whole."""
    p, mask, area = column([(z, 0.9) for z in (20, 43, 66, 89, 112)], nz=150)
    mask[:, :, :] = False
    mask[1:150, 5:36, :] = True
    for k in range(138, 150):  # the edge takes more of the column row by row
        mask[k, 36 - 2 * (k - 137):, :] = False
    area = mask.sum(axis=(1, 2)).astype(np.float64) * STEP * STEP
    zz = np.arange(p.shape[0])[:, None, None]
    uu = np.arange(NU)[None, :, None]
    edge = (np.abs(zz - 143) <= 1) & (uu >= 5) & (uu <= 12)
    p[np.broadcast_to(edge, p.shape)] = 0.6
    planes = find_discs(p, mask, area, (20.0, 10.0), STEP)
    at_edge = [d for d in planes if abs(d.z0 - 143) < 3]
    assert len(at_edge) == 1 and at_edge[0].strength < 0.3
    rows = column_rows(area)
    assert rows is not None
    runs = bodies_between(planes, rows, np.ones(p.shape[0]), STEP)
    assert runs[-1].lower is not None and round(runs[-1].lower.z0) == 112
    assert runs[-1].upper is None


def test_a_merged_pair_where_bodies_grow_down_the_column_is_split() -> None:
    """Upper thoracic bodies are much shorter than the mid-thoracic ones below them (the chest
    series: periods 16.5 mm above, 23 mm below). Two bodies whose disc the network missed
    (40 mm) are split at its faint disc evidence, though they are less than twice the upper
    quartile of all their neighbours."""
    discs = [(z, 0.9) for z in (10, 25.7, 41.3, 57, 71.6, 98.4, 111, 122, 133)]
    p, mask, area = column(discs, nz=170)
    planes = find_discs(p, mask, area, (20.0, 10.0), STEP)
    rows = column_rows(area)
    assert rows is not None
    share = np.zeros(p.shape[0])
    share[83:88] = [0.1, 0.14, 0.16, 0.14, 0.1]
    runs = bodies_between(planes, rows, np.ones(p.shape[0]), STEP, GapEvidence(None, share))
    cuts = [round(r.lower.z0) for r in runs if r.lower is not None and r.lower.blind]
    assert cuts == [85]


def test_a_weak_disc_piece_resolves_a_merged_pair_with_real_endplates() -> None:
    """The chest series' T4/T5 disc (v4 recipe network): no piece at the disc threshold, but a
    piece at ``WEAK_DISC_P`` covering a third of the column. Where the height prior asks for a
    disc it is used as a disc (a plane, endplates resolved, heights measurable), not a blind
    cut; where it does not (a normal gap) it changes nothing."""
    p, mask, area = column([(z, 0.9) for z in (20, 40, 60, 100, 120, 140)])
    zz = np.arange(p.shape[0])[:, None, None]
    uu = np.arange(NU)[None, :, None]
    piece = (np.abs(zz - 81) <= 1) & (uu >= 10) & (uu <= 22)
    p[np.broadcast_to(piece, p.shape)] = 0.3
    planes = find_discs(p, mask, area, (20.0, 10.0), STEP)
    weak = find_discs(p, mask, area, (20.0, 10.0), STEP, WEAK_DISC_P)
    assert all(abs(d.z0 - 81) > 3 for d in planes)
    assert any(abs(d.z0 - 81) < 1 for d in weak)
    rows = column_rows(area)
    assert rows is not None
    share = np.zeros(p.shape[0])
    share[80:83] = 0.16
    runs = bodies_between(planes, rows, np.ones(p.shape[0]), STEP,
                          GapEvidence(None, share, (), weak))
    assert any(r.lower is not None and abs(r.lower.z0 - 81) < 1 for r in runs)
    assert not any(r.blind_lower or r.blind_upper for r in runs)
    blind = bodies_between(planes, rows, np.ones(p.shape[0]), STEP, GapEvidence(None, share))
    assert any(r.blind_lower for r in blind)  # without it: a blind cut, no heights

    normal = column([(z, 0.9) for z in (20, 40, 60, 80, 100)])
    piece = (np.abs(zz - 50) <= 1) & (uu >= 10) & (uu <= 22)
    normal[0][np.broadcast_to(piece, normal[0].shape)] = 0.3  # a weak 'disc' inside a body
    weak = find_discs(normal[0], normal[1], normal[2], (20.0, 10.0), STEP, WEAK_DISC_P)
    planes = find_discs(*normal, (20.0, 10.0), STEP)
    rows = column_rows(normal[2])
    assert rows is not None
    with_weak = bodies_between(planes, rows, np.ones(p.shape[0]), STEP,
                               GapEvidence(weak_discs=weak))
    assert len(with_weak) == len(bodies_between(planes, rows, np.ones(p.shape[0]), STEP)) == 6
