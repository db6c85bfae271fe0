"""Where the discs are along the straightened column, and the bodies between them.

Discs are objects, not rows: pieces of the network's disc class on the mid-sagittal slab (where
consecutive discs are always separated by a body), each fitted with a plane
``z = z0 + du * (u - u_axis) + dv * (v - v_axis)`` to the disc voxels of the whole column near
it (weighted by the disc probability), so a disc tilted by lordosis or scoliosis, a wedge-shaped
disc above a wedge fracture or the lumbosacral disc are followed. A disc's *strength* is the
share of the column's cross-section it covers.

Bodies lie between consecutive discs. Thin or degenerate discs can be faint, and a body must not
be split in two, so the spacing of the discs is checked against their neighbours (the
body-height prior): a gap much larger than its neighbours (the mean of the medians of the gaps
below and above it: bodies grow down the column) is split at its best faint disc (a piece
covering less of the column, a piece of weaker disc probability, or a disc seen on the image; else,
when clearly two bodies tall, at a blind plane, whose endplates are then not resolved); two
gaps much smaller than their neighbours with a weak disc between them are joined. The runs at
the two ends of the column (outermost disc to the end of the column) get the same check, so
several bodies whose discs the network missed near an end of the scan are not reported as one.
A fractured body keeps its clear discs and is never joined.

Rows (z) increase cranially; u, v are indices of the straightened grid.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

DISC_P = 0.4  # disc voxels: network disc probability at least this
WEAK_DISC_P = 0.25  # ... for weak discs, offered only where the height prior asks for a disc
# (the chest series' T4/T5 disc: no piece at 0.4, a piece covering 0.38 of the column at 0.25)
MID_SLAB_MM = 6.0  # discs are found on the mid-sagittal slab +- this
MIN_DISC_DEPTH_MM = 6.0  # a disc piece spans at least this much antero-posteriorly
NEAR_LINE_MM = 3.0  # disc voxels of the column within this of a disc's mid-sagittal line
SAME_DISC_MM = 4.0  # two pieces whose planes meet the axis this close are one disc
STRONG = 0.3  # a disc covering this share of the column's cross-section is certain
FAINT = 0.08  # ... this share: used only where the height prior asks for a disc
MIN_COLUMN_AREA_MM2 = 60.0  # rows with less body + disc cross-section are not column
WIDE_AREA_MM = 40.0  # a disc's share is also taken of the column's cross-section this far
SPLIT_FACTOR = 1.55  # a gap this much larger than its neighbours holds two bodies
BLIND_SPLIT_FACTOR = 1.8  # ... split even without a visible disc
JOIN_FACTOR = 0.55  # two neighbouring gaps each smaller than this x their neighbours ...
JOIN_MAX_FACTOR = 1.3  # ... and together not larger than this x, with a weak disc between
NEVER_JOIN = 0.6  # never join across a disc this strong (a fractured body is short, not split)
SAME_DISC_FACTOR = 0.3  # discs closer than this x the period around them are one disc
ONE_PERIOD_FACTOR = 1.15  # two gaps together no longer than this x the period: one vertebra
DEFAULT_PERIOD_MM = 26.0  # body + disc, used when no neighbour is known
MAX_TILT = 1.2  # |dz/du|, |dz/dv| of a plane (about 50 degrees)
MAX_TILT_DIFFERENCE = 0.5  # ... and from the discs around it (about 27 degrees)
ENDPLATE_REACH_MM = 6.0  # a disc's endplates lie within this above and below it
MIN_ENDPLATE_SCORE_HU = 40.0  # a blind cut goes to an endplate pair at least this clear
IMAGE_DISC_STRENGTH = 0.6  # an image disc (dark band between endplates) covering this share
# of the cross-section is a candidate (on the held-out s0009 the visible discs cover 0.66-0.99,
# dark bands inside bodies 0.27-0.55)
BLIND_DISC_SHARE = 0.15  # ... but first to the row where the network's disc probability,
# averaged over the column's cross-section, peaks at least this high (a degenerate disc with
# sclerotic endplates is no dark row between two bright ones, yet the network sees it, below
# the threshold of a disc piece)


@dataclass(frozen=True)
class BlindCues:
    """Per row of the column, where a disc the network did not clearly see may be:
    ``endplate``: :func:`endplate_score` (HU, image only), ``disc_share``: mean disc probability
    over the column's cross-section; either may be None."""

    endplate: NDArray[np.float64] | None = None
    disc_share: NDArray[np.float64] | None = None


@dataclass(frozen=True)
class GapEvidence:
    """Where a disc the network did not clearly see may be: ``hu_profile``: mean HU of the
    column's cross-section per row, ``disc_share``: its mean disc probability per row (where
    to cut blind), ``image_discs``: discs seen on the image (:mod:`.image_discs`), offered like
    the network's faint discs where a run is too long for one body (a disc there, not a blind
    cut); ``weak_discs``: the network's disc pieces at ``WEAK_DISC_P`` (:func:`find_discs`
    with ``threshold``), offered the same way."""

    hu_profile: NDArray[np.float64] | None = None
    disc_share: NDArray[np.float64] | None = None
    image_discs: Sequence[DiscPlane] = ()
    weak_discs: Sequence[DiscPlane] = ()


@dataclass(frozen=True)
class DiscPlane:
    """A disc: its plane through the column axis and how clearly it was seen."""

    z0: float  # row where the plane meets the column axis
    du: float  # rows per u cell
    dv: float  # rows per v cell
    strength: float  # share of the column cross-section covered (0 for a blind plane)
    u_axis: float
    v_axis: float
    blind: bool = False

    def z_at(self, u: NDArray[np.float64], v: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.asarray(self.z0 + self.du * (u - self.u_axis) + self.dv * (v - self.v_axis))


@dataclass(frozen=True)
class BodyRun:
    """One vertebral body: between ``lower`` and ``upper`` disc (None at an end of the column);
    ``lo``..``hi`` its rows on the column axis."""

    lo: int
    hi: int
    lower: DiscPlane | None
    upper: DiscPlane | None

    @property
    def rows(self) -> int:
        return self.hi - self.lo + 1

    @property
    def blind_lower(self) -> bool:
        return self.lower is not None and self.lower.blind

    @property
    def blind_upper(self) -> bool:
        return self.upper is not None and self.upper.blind


def column_rows(area_mm2: NDArray[np.float64]) -> tuple[int, int] | None:
    """First and last row of the longest run of rows that hold column cross-section."""
    lab, n = ndimage.label(area_mm2 >= MIN_COLUMN_AREA_MM2)
    if n == 0:
        return None
    best = int(np.argmax(np.bincount(lab)[1:])) + 1
    idx = np.flatnonzero(lab == best)
    return int(idx[0]), int(idx[-1])


def _fit(zz: NDArray[np.float64], uu: NDArray[np.float64], vv: NDArray[np.float64],
         w: NDArray[np.float64], u_axis: float, v_axis: float) -> tuple[float, float, float]:
    a = np.stack([np.ones_like(uu), uu - u_axis, vv - v_axis], axis=1) * w[:, None]
    try:
        coef, *_ = np.linalg.lstsq(a, zz * w, rcond=None)
    except np.linalg.LinAlgError:
        return float(np.average(zz, weights=w)), 0.0, 0.0
    z0, du, dv = (float(c) for c in coef)
    if abs(du) > MAX_TILT or abs(dv) > MAX_TILT:
        return float(np.average(zz, weights=w)), 0.0, 0.0
    return z0, du, dv


def _mid_pieces(p_disc: NDArray[np.float32], in_column: NDArray[np.bool_], axis_v: int,
                half: int, min_cells: int, threshold: float
                ) -> list[tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64]]]:
    """Discs as 4-connected pieces of the mid-sagittal slab's disc probability (z, u): in a
    sagittal view consecutive discs are always separated by a body."""
    sl = slice(max(0, axis_v - half), axis_v + half + 1)
    mid = p_disc[:, :, sl].mean(axis=2)
    mask = (mid >= threshold) & in_column[:, :, sl].any(axis=2)
    lab, _ = ndimage.label(mask)
    out = []
    for i, box in enumerate(ndimage.find_objects(lab), start=1):
        if box is None:
            continue
        zz, uu = np.nonzero(lab[box] == i)
        if np.unique(uu).size < min_cells:
            continue
        out.append((zz + box[0].start, uu + box[1].start, mid[box][lab[box] == i].astype(
            np.float64)))
    return out


def find_discs(p_disc: NDArray[np.float32], in_column: NDArray[np.bool_],
               column_area: NDArray[np.float64], axis: tuple[float, float],
               step_mm: float, threshold: float = DISC_P) -> list[DiscPlane]:
    """Disc planes (caudal -> cranial) from the disc probability ``[z, u, v]`` inside the
    column mask (voxels at ``threshold`` or more); ``column_area`` (mm^2 per row) gives each
    disc's share of the cross-section.

    Each disc is found on the mid-sagittal slab (a line z(u)), then its plane is fitted to the
    disc voxels of the whole column near that line (lateral tilt too)."""
    cell = step_mm * step_mm
    half = max(1, round(MID_SLAB_MM / step_mm))
    min_cells = max(2, round(MIN_DISC_DEPTH_MM / step_mm))
    near = max(1.0, NEAR_LINE_MM / step_mm)
    disc = (p_disc >= threshold) & in_column
    zz3, uu3, vv3 = (a.astype(np.float64) for a in np.nonzero(disc))
    w3 = p_disc[disc].astype(np.float64)
    planes: list[DiscPlane] = []
    for zz, uu, w in _mid_pieces(p_disc, in_column, round(axis[1]), half, min_cells,
                                 threshold):
        z0, du = _line(zz.astype(np.float64), uu.astype(np.float64), w, axis[0])
        sel = np.abs(zz3 - (z0 + du * (uu3 - axis[0]))) <= near
        if sel.sum() < min_cells:
            continue
        z0, du, dv = _fit(zz3[sel], uu3[sel], vv3[sel], w3[sel], *axis)
        area = len(set(zip(uu3[sel].tolist(), vv3[sel].tolist(), strict=True))) * cell
        cross = _cross_section(column_area, z0, step_mm, area)
        planes.append(DiscPlane(z0, du, dv, min(1.0, area / max(cross, 1.0)), *axis))
    return _merge_same(sorted(planes, key=lambda d: d.z0), step_mm)


def _cross_section(column_area: NDArray[np.float64], z0: float, step_mm: float,
                   fallback: float) -> float:
    """The column's cross-section (mm^2) a disc at row ``z0`` is compared with: the median of
    the rows next to it, or of the rows within ``WIDE_AREA_MM``, whichever is larger. Where
    the scan's edge cuts the column obliquely (a tilted spine, a gantry tilt), the rows next
    to the edge hold only part of it; against that part alone a piece of disc-like signal at
    the edge would look like a whole disc."""
    row = int(np.clip(round(z0), 0, len(column_area) - 1))
    near = column_area[max(0, row - 8): row + 9]
    k = max(1, round(WIDE_AREA_MM / step_mm))
    wide = column_area[max(0, row - k): row + k + 1]
    if not near.size:
        return fallback
    return max(float(np.median(near)), float(np.median(wide)))


def _line(zz: NDArray[np.float64], uu: NDArray[np.float64], w: NDArray[np.float64],
          u_axis: float) -> tuple[float, float]:
    if np.unique(uu).size < 2:
        return float(np.average(zz, weights=w)), 0.0
    a = np.stack([np.ones_like(uu), uu - u_axis], axis=1) * w[:, None]
    coef, *_ = np.linalg.lstsq(a, zz * w, rcond=None)
    z0, du = float(coef[0]), float(coef[1])
    if abs(du) > MAX_TILT:
        return float(np.average(zz, weights=w)), 0.0
    return z0, du


def _merge_same(planes: list[DiscPlane], step_mm: float) -> list[DiscPlane]:
    """Pieces of one disc (split by an osteophyte or a vacuum cleft) become the stronger one."""
    out: list[DiscPlane] = []
    for d in planes:
        if out and (d.z0 - out[-1].z0) * step_mm <= SAME_DISC_MM:
            if d.strength > out[-1].strength:
                out[-1] = d
            continue
        out.append(d)
    return out


def _runs(discs: list[DiscPlane], lo: int, hi: int) -> list[BodyRun]:
    bounds: list[DiscPlane | None] = [None, *discs, None]
    out = []
    for a, b in itertools.pairwise(bounds):
        r_lo = lo if a is None else int(np.floor(a.z0)) + 1
        r_hi = hi if b is None else int(np.ceil(b.z0)) - 1
        if r_hi >= r_lo:
            out.append(BodyRun(r_lo, r_hi, a, b))
    return out


def _expected(periods: list[float], i: int, q: float = 50.0) -> float:
    """Typical body + disc period around gap i: the ``q`` percentile of up to 3 gaps on each
    side (the upper quartile for splitting, so short neighbours (a fracture, a cleft) do not
    make a normal gap look like two bodies)."""
    near = [periods[j] for j in range(i - 3, i + 4) if j != i and 0 <= j < len(periods)]
    return float(np.percentile(near, q)) if near else DEFAULT_PERIOD_MM


def _expected_split(periods: list[float], i: int) -> float:
    """Typical period around gap i for the split check, following the column's trend: the
    mean of the median of up to 3 gaps below and of up to 3 gaps above (bodies grow from T1
    to L5, so in the upper thoracic spine the gaps below are 20-40 % longer than those above;
    a median per side also ignores one short neighbour, a fracture or a cleft). With gaps on
    one side only, their upper quartile."""
    below = periods[max(0, i - 3): i]
    above = periods[i + 1: i + 4]
    if below and above:
        return float(np.median(below) + np.median(above)) / 2.0
    near = below or above
    return float(np.percentile(near, 75.0)) if near else DEFAULT_PERIOD_MM


def endplate_score(hu_profile: NDArray[np.float64] | None, step_mm: float
                   ) -> NDArray[np.float64] | None:
    """Per row, how much it looks like a disc between two endplates on the image alone: the
    lower of the brightest rows within ``ENDPLATE_REACH_MM`` above and below, minus this row
    (HU; mean HU of the column's cross-section per row). Endplates are cortical bone on both
    sides of every disc, also where the network sees no disc and where osteoporotic trabecular
    bone is as dark as disc (its body centre has no endplate that near)."""
    if hu_profile is None or not np.isfinite(hu_profile).any():
        return None
    p = np.where(np.isfinite(hu_profile), hu_profile, np.nanmin(hu_profile))
    p = ndimage.gaussian_filter1d(p, 0.75 / step_mm, mode="nearest")
    k = max(1, round(ENDPLATE_REACH_MM / step_mm))
    padded = np.pad(p, k, mode="edge")
    n = len(p)
    up = np.max([padded[k + j: k + j + n] for j in range(1, k + 1)], axis=0)
    down = np.max([padded[k - j: k - j + n] for j in range(1, k + 1)], axis=0)
    return np.asarray(np.maximum(0.0, np.minimum(up, down) - p))


def _blind_row(lo: int, hi: int, body_amount: NDArray[np.float64], cues: BlindCues) -> int:
    """Where to cut a run with no clear disc in rows lo..hi: the network's faint disc evidence
    (peak of the cross-section's mean disc probability), else the clearest endplate pair on the
    image, each weighted towards the middle of the window (where the height prior expects the
    disc), else the row with the least body."""
    if hi <= lo:
        return lo
    rows = np.arange(lo, hi + 1, dtype=np.float64)
    middle, half = (lo + hi) / 2.0, max(1.0, (hi - lo) / 2.0)
    towards_middle = np.exp(-(((rows - middle) / half) ** 2))
    for cue, least in ((cues.disc_share, BLIND_DISC_SHARE),
                       (cues.endplate, MIN_ENDPLATE_SCORE_HU)):
        if cue is not None and float(cue[lo: hi + 1].max()) >= least:
            return lo + int(np.argmax(cue[lo: hi + 1] * towards_middle))
    return lo + int(np.argmin(body_amount[lo: hi + 1]))


def _split_once(discs: list[DiscPlane], faint: list[DiscPlane], body_amount: NDArray[np.float64],
                step_mm: float, cues: BlindCues) -> bool:
    periods = [(b.z0 - a.z0) * step_mm for a, b in itertools.pairwise(discs)]
    for i, period in enumerate(periods):
        exp = _expected_split(periods, i)
        if period <= SPLIT_FACTOR * exp:
            continue
        a, b = discs[i], discs[i + 1]
        margin = 0.25 * (b.z0 - a.z0)
        inner = [d for d in faint if a.z0 + margin < d.z0 < b.z0 - margin]
        if inner:
            discs.append(max(inner, key=lambda d: d.strength))
        elif period > BLIND_SPLIT_FACTOR * exp:
            lo, hi = round(a.z0 + margin), round(b.z0 - margin)
            row = _blind_row(lo, hi, body_amount, cues) if hi > lo else round(
                (a.z0 + b.z0) / 2)
            discs.append(DiscPlane(float(row), (a.du + b.du) / 2, (a.dv + b.dv) / 2, 0.0,
                                   a.u_axis, a.v_axis, blind=True))
        else:
            continue
        discs.sort(key=lambda d: d.z0)
        return True
    return False


def _split_end_once(discs: list[DiscPlane], faint: list[DiscPlane],
                    body_amount: NDArray[np.float64], rows: tuple[int, int],
                    step_mm: float, cues: BlindCues,
                    open_ends: tuple[bool, bool] = (True, True)) -> bool:
    """The runs at the ends of the column that the scan cuts (``open_ends``: low, high) get
    the same height check as the others: one much longer than the periods next to it holds
    more bodies, and a disc (faint, else blind at the clearest endplate pair or the least
    body) is put about one period from the outermost disc. An end inside the scan is the
    column's own end (C2 with its dens below the skull base is twice as tall as C3: not
    split)."""
    if not discs:
        return False
    lo, hi = rows
    periods = [(b.z0 - a.z0) * step_mm for a, b in itertools.pairwise(discs)]
    for low_end in (True, False):
        if not open_ends[0 if low_end else 1]:
            continue
        near = periods[:3] if low_end else periods[-3:]
        exp = float(np.percentile(near, 75.0)) if near else DEFAULT_PERIOD_MM
        edge = discs[0] if low_end else discs[-1]
        length = ((edge.z0 - lo) if low_end else (hi - edge.z0)) * step_mm
        if length <= SPLIT_FACTOR * exp:
            continue
        sign = -1.0 if low_end else 1.0
        near_z = edge.z0 + sign * 0.7 * exp / step_mm
        far_z = edge.z0 + sign * 1.3 * exp / step_mm
        w_lo, w_hi = sorted((near_z, far_z))
        w_lo, w_hi = max(w_lo, lo + 0.25 * exp / step_mm), min(w_hi, hi - 0.25 * exp / step_mm)
        if w_hi <= w_lo:
            continue
        inner = [d for d in faint if w_lo < d.z0 < w_hi]
        if inner:
            discs.append(max(inner, key=lambda d: d.strength))
        elif length > BLIND_SPLIT_FACTOR * exp:
            row = _blind_row(round(w_lo), round(w_hi), body_amount, cues)
            discs.append(DiscPlane(float(row), edge.du, edge.dv, 0.0, edge.u_axis,
                                   edge.v_axis, blind=True))
        else:
            continue
        discs.sort(key=lambda d: d.z0)
        return True
    return False


def _merge_close_once(discs: list[DiscPlane], step_mm: float) -> bool:
    """Two discs closer than ``SAME_DISC_FACTOR`` x the period around them have no body
    between them (even a vertebra plana keeps more): one disc seen twice (two pieces at
    different tilts) or a spurious one; the weaker goes."""
    periods = [(b.z0 - a.z0) * step_mm for a, b in itertools.pairwise(discs)]
    for i, period in enumerate(periods):
        if period < SAME_DISC_FACTOR * _expected(periods, i):
            a, b = discs[i], discs[i + 1]
            if a.blind != b.blind:
                discs.remove(a if a.blind else b)
            else:
                discs.remove(a if a.strength < b.strength else b)
            return True
    return False


def _expected_without(periods: list[float], skip: set[int]) -> float:
    """Median of up to 3 periods on each side of the ``skip`` gaps (themselves left out)."""
    lo, hi = min(skip), max(skip)
    near = [periods[j] for j in range(lo - 3, hi + 4) if j not in skip and 0 <= j < len(periods)]
    return float(np.median(near)) if near else DEFAULT_PERIOD_MM


def _join_once(discs: list[DiscPlane], step_mm: float, one_period: bool = False) -> bool:
    """Join two gaps across the disc between them when both are short and the disc is weak;
    with ``one_period`` (checked only when nothing is left to split, so that long gaps no
    longer inflate the expected period), also when together they are no longer than one
    vertebra's period, whatever the disc's strength: a body does not hold a disc, and a
    fractured body with its normal neighbour is clearly longer than one period."""
    periods = [(b.z0 - a.z0) * step_mm for a, b in itertools.pairwise(discs)]
    for i in range(len(periods) - 1):
        middle = discs[i + 1]
        if middle.blind:
            continue
        exp = _expected_without(periods, {i, i + 1})
        together = periods[i] + periods[i + 1]
        weak_pair = (middle.strength < NEVER_JOIN and periods[i] < JOIN_FACTOR * exp
                     and periods[i + 1] < JOIN_FACTOR * exp and together <= JOIN_MAX_FACTOR * exp)
        if weak_pair or (one_period and together <= ONE_PERIOD_FACTOR * exp):
            discs.remove(middle)
            return True
    return False


def _tilted_unlike_neighbours(discs: list[DiscPlane]) -> list[DiscPlane]:
    """Not-so-clear discs tilted far from the discs around them (a cleft or a node in a body,
    the network's disc class on a posterior bulge): consecutive discs are nearly parallel."""
    out = []
    for i, d in enumerate(discs):
        near = [discs[j] for j in (i - 2, i - 1, i + 1, i + 2) if 0 <= j < len(discs)]
        if d.strength >= NEVER_JOIN or len(near) < 2:
            continue
        du = float(np.median([n.du for n in near]))
        dv = float(np.median([n.dv for n in near]))
        if max(abs(d.du - du), abs(d.dv - dv)) > MAX_TILT_DIFFERENCE:
            out.append(d)
    return out


def bodies_between(discs: list[DiscPlane], rows: tuple[int, int],
                   body_amount: NDArray[np.float64], step_mm: float,
                   seen: GapEvidence | None = None,
                   open_ends: tuple[bool, bool] = (True, True)) -> list[BodyRun]:
    """Body runs (caudal -> cranial) between the strong discs, after the height-prior checks.
    ``seen``: what else shows where a disc the network did not clearly see may be (see
    :class:`GapEvidence`); ``open_ends``: whether the scan cuts the column below / above (only
    then are the end runs checked against the height prior)."""
    seen = seen or GapEvidence()
    cues = BlindCues(endplate_score(seen.hu_profile, step_mm), seen.disc_share)
    lo, hi = rows
    inside = [d for d in discs if lo < d.z0 < hi]
    strong = [d for d in inside if d.strength >= STRONG]
    odd = _tilted_unlike_neighbours(strong)
    strong = [d for d in strong if d not in odd]
    faint = [d for d in inside if FAINT <= d.strength < STRONG] + odd + [
        d for d in seen.image_discs if lo < d.z0 < hi and d.strength >= IMAGE_DISC_STRENGTH
        and all(abs(d.z0 - s.z0) * step_mm > SAME_DISC_MM for s in strong)] + [
        d for d in seen.weak_discs if lo < d.z0 < hi and d.strength >= FAINT
        and all(abs(d.z0 - s.z0) * step_mm > SAME_DISC_MM for s in inside)]
    for _ in range(24):
        if not (_merge_close_once(strong, step_mm) or _join_once(strong, step_mm)
                or _split_once(strong, faint, body_amount, step_mm, cues)
                or _split_end_once(strong, faint, body_amount, (lo, hi), step_mm, cues,
                                   open_ends)
                or _join_once(strong, step_mm, one_period=True)):
            break
    runs = _runs(strong, lo, hi)
    return [r for r in runs if r.rows * step_mm >= 4.0 or r.lower is None or r.upper is None]


def with_strength(d: DiscPlane, strength: float) -> DiscPlane:
    return replace(d, strength=strength)
