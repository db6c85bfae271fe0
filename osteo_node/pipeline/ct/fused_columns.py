"""Cut fused columns of vertebral bodies at their discs (on the canonical grid).

Thin discs are often not resolved at the coarse spacing, so two or more bodies come out as one
connected component of the body class. A component much taller than the vertebral pitch (the
dominant repeat length of its disc-likeness profile) is cut at the slices where that profile is
highest; see :func:`split_fused`. The canonical grid's k axis points superior.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

SPLIT_FACTOR = 1.55  # a component taller than this x the vertebral pitch holds >1 body
MIN_FUSED_MM = 36.0  # shorter components are single bodies
# body + disc repeat length searched in a fused column: T1-T4 ~20 mm, lower thoracic ~25-30 mm,
# lumbar ~35-40 mm (cervical ~16 mm is not resolved: cervical levels are not measured)
MIN_PITCH_MM, MAX_PITCH_MM = 19.0, 45.0
# a cut that leaves less than this fraction of a pitch at the field-of-view edge needs this much
# disc evidence; otherwise the sliver is the same body continuing out of view
EDGE_SLIVER = 0.35
EDGE_CUT_SCORE = 0.5
# a component cut by the field of view may be one body plus part of the next (too short for
# SPLIT_FACTOR): it is cut when a disc this clear is seen inside it
EDGE_DISC_SCORE = 1.0


@dataclass(frozen=True)
class ClassGrid:
    """The network output being separated and its isotropic spacing (mm)."""

    classes: NDArray[np.uint8]
    hu: NDArray[np.float32]
    disc_prob: NDArray[np.float32]
    spacing: float

    @property
    def voxel_ml(self) -> float:
        return self.spacing**3 / 1000.0

    @property
    def n_slices(self) -> int:
        return int(self.classes.shape[0])


def _profile(
    comp: NDArray[np.bool_], hu: NDArray[np.float32], disc_prob: NDArray[np.float32]
) -> tuple[int, NDArray[np.float64]]:
    """Disc-likeness along k of one component (high = disc).

    At a coarse spacing a thin disc is a dip between the two bright endplates that flank it,
    while the middle of a body is flat; so the feature is the depth of the dip of the mean HU
    of the eroded cross-section below both flanks (within 2 slices), plus the network's disc
    probability.
    """
    ks = np.nonzero(comp.any(axis=(1, 2)))[0]
    k0, k1 = int(ks.min()), int(ks.max())
    n = k1 - k0 + 1
    hu_mean = np.zeros(n)
    disc = np.zeros(n)
    # the column's footprint: where a disc of this column can be, even where the body class is
    # thin (a tilted disc crosses a slice partly as disc, partly as body)
    foot = ndimage.binary_dilation(comp.any(axis=0), iterations=1)
    for idx, k in enumerate(range(k0, k1 + 1)):
        m = comp[k]
        core = ndimage.binary_erosion(m, iterations=1)
        sel = core if core.sum() >= 3 else m
        if sel.any():
            hu_mean[idx] = float(hu[k][sel].mean())
            n_disc = int((disc_prob[k][foot] > 0.5).sum())
            disc_frac = n_disc / (n_disc + int(m.sum()))
            disc[idx] = max(float(disc_prob[k][m].mean()), disc_frac)
    dip = np.zeros(n)
    for idx in range(1, n - 1):
        left = hu_mean[max(0, idx - 2) : idx].max()
        right = hu_mean[idx + 1 : idx + 3].max()
        dip[idx] = max(0.0, min(left, right) - hu_mean[idx])
    scale = float(np.median(np.abs(hu_mean - np.median(hu_mean)))) * 1.4826 + 20.0
    return k0, dip / scale + 3.0 * disc


def _period(score: NDArray[np.float64], lo: int, hi: int) -> int | None:
    """Dominant repeat length (slices) of the profile, from its autocorrelation."""
    x = score - score.mean()
    if len(x) < 2 * lo + 2 or not x.any():
        return None
    ac = np.correlate(x, x, mode="full")[len(x) - 1 :]
    ac = ac / ac[0]
    best, best_val = None, 0.1
    for lag in range(lo, min(hi, len(x) // 2) + 1):
        if ac[lag] >= ac[lag - 1] and ac[lag] >= ac[min(lag + 1, len(ac) - 1)] and \
                ac[lag] > best_val:
            best, best_val = lag, float(ac[lag])
    return best


def disc_cuts(k0: int, score: NDArray[np.float64], period: float, open_ends: tuple[bool, bool]
          ) -> list[int]:
    """Disc slices: the most disc-like sequence with gaps of 0.7-1.35 x ``period`` (DP).

    The end pieces are whole bodies (>= 0.6 period) unless that end of the component is cut by
    the field of view (``open_ends`` = (bottom, top)).
    """
    n = len(score)
    gmin, gmax = max(2, round(0.7 * period)), max(3, round(1.35 * period))
    # each cut costs the column's typical (median) score: an extra cut on a weak dip must beat
    # what it displaces, so a strong disc is not traded for a weak dip plus a neighbouring slice
    gain = score - float(np.median(score))
    end_lo = [1 if open_end else max(2, round(0.6 * period)) for open_end in open_ends]
    best = np.full(n, -np.inf)
    prev = np.full(n, -1)
    for i in range(n):
        if end_lo[0] <= i <= gmax:  # first cut
            best[i] = gain[i]
        for j in range(max(0, i - gmax), i - gmin + 1):
            if best[j] > -np.inf and best[j] + gain[i] > best[i]:
                best[i] = best[j] + gain[i]
                prev[i] = j
    ends = [i for i in range(n) if end_lo[1] <= n - 1 - i <= gmax]
    ends = [i for i in ends if best[i] > -np.inf]
    if not ends:
        return []
    i = max(ends, key=lambda e: best[e])
    cuts = []
    while i >= 0:
        cuts.append(i)
        i = int(prev[i])
    cuts.sort()
    sliver = EDGE_SLIVER * period
    # the merged end piece must still be no longer than one pitch (one body + one disc)
    if (open_ends[1] and cuts and n - 1 - cuts[-1] < sliver and score[cuts[-1]] < EDGE_CUT_SCORE
            and n - 1 - (cuts[-2] if len(cuts) > 1 else -1) <= period):
        cuts.pop()
    if (open_ends[0] and cuts and cuts[0] < sliver and score[cuts[0]] < EDGE_CUT_SCORE
            and (cuts[1] if len(cuts) > 1 else n) <= period):
        cuts.pop(0)
    return [c + k0 for c in cuts]


def _fused_cuts(
    comp: NDArray[np.bool_], height: float, typical: float, grid: ClassGrid
) -> list[int]:
    """Disc slices at which a tall component is cut into bodies (none: a single body)."""
    spacing = grid.spacing
    pitch_lo, pitch_hi = int(np.ceil(MIN_PITCH_MM / spacing)), int(MAX_PITCH_MM / spacing)
    k0, score = _profile(comp, grid.hu, grid.disc_prob)
    period = _period(score, pitch_lo, pitch_hi)
    pitch = period * spacing if period is not None else typical * 1.15
    k_top = k0 + len(score) - 1
    # open: ends within one slice of the field of view (the edge slice is partial volume)
    open_ends = (k0 <= 1, k_top >= grid.n_slices - 2)
    if height < SPLIT_FACTOR * pitch and not (
        any(open_ends) and float(score[1:-1].max(initial=0.0)) >= EDGE_DISC_SCORE
    ):
        return []
    return disc_cuts(k0, score, pitch / spacing, open_ends)


def split_fused(
    lab: NDArray[np.int32], n: int, heights: NDArray[np.float64], typical: float, grid: ClassGrid
) -> dict[int, tuple[bool, bool]]:
    """Cut fused components in ``lab`` (relabelled in place; thin discs are often not resolved at
    the coarse spacing). Returns label -> (bottom is a cut, top is a cut) of the new pieces."""
    next_label = n + 1
    cut_ends: dict[int, tuple[bool, bool]] = {}
    for idx in range(1, n + 1):
        if heights[idx] < MIN_FUSED_MM:
            continue
        comp = lab == idx
        cuts = _fused_cuts(comp, float(heights[idx]), typical, grid)
        if not cuts:
            continue
        bounds = [0, *cuts, grid.n_slices]
        for lo, hi in itertools.pairwise(bounds):
            part = comp.copy()
            part[:lo] = False
            part[hi:] = False
            lab[part] = next_label
            cut_ends[next_label] = (lo in cuts, hi in cuts)
            next_label += 1
        for k in cuts:  # the cut slice itself belongs to neither body (it is the disc)
            lab[k][comp[k]] = 0
    return cut_ends
