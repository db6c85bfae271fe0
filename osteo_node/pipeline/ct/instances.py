"""Split the level-agnostic network output into individual vertebrae (on the canonical grid).

Bodies are connected components of the *vertebral body* class (discs separate them). A component
much taller than a typical body (two bodies fused through a thin disc at 3 mm) is cut along the
spine axis at the slices where the disc probability is highest. Components far from the spine
line are discarded. Posterior elements are attached to the body they grow from (geodesic
propagation inside the vertebra mask, so each pedicle reaches its own body first). The sacrum
is the largest sacrum-class component, when big enough.

The canonical grid's k axis points superior, so a larger k is more cranial.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

MIN_BODY_ML = 1.0  # smaller body fragments are noise
MIN_PARTIAL_ML = 0.3  # ... unless cut by the top/bottom of the field of view
MIN_SACRUM_ML = 10.0
SACRUM_CONTACT = 0.08  # a body with this fraction of voxels touching the sacrum is S1
DEFAULT_BODY_HEIGHT_MM = 24.0
SPLIT_FACTOR = 1.55  # a component taller than this x the vertebral pitch holds >1 body
MIN_FUSED_MM = 36.0  # shorter components are single bodies
MERGE_FRACTION = 0.65  # two consecutive pieces each smaller than this x the median body...
MERGE_HEIGHT = 1.25  # ...and together no taller than this x the typical body are one body
# body + disc repeat length searched in a fused column: T1-T4 ~20 mm, lower thoracic ~25-30 mm,
# lumbar ~35-40 mm (cervical ~16 mm is not resolved: cervical levels are not measured)
MIN_PITCH_MM, MAX_PITCH_MM = 19.0, 45.0
MAX_OFF_AXIS_MM = 35.0
# a cut that leaves less than this fraction of a pitch at the field-of-view edge needs this much
# disc evidence; otherwise the sliver is the same body continuing out of view
EDGE_SLIVER = 0.35
EDGE_CUT_SCORE = 0.5
# a component cut by the field of view may be one body plus part of the next (too short for
# SPLIT_FACTOR): it is cut when a disc this clear is seen inside it
EDGE_DISC_SCORE = 1.0
GROW_STEPS_MM = 45.0


@dataclass(frozen=True)
class BodyInstance:
    """One vertebral body on the canonical grid (``label`` = its value in the instance map)."""

    label: int
    centroid_kji: tuple[float, float, float]
    k_range: tuple[int, int]  # inclusive
    volume_ml: float
    touches_fov: bool  # cut by the top/bottom of the field of view (partial vertebra)
    # an endplate of this body is a cut through a fused column (the network saw no disc there),
    # an axial plane at the coarse grid, not the real endplate: its heights are not measurable
    cut_endplate: bool = False


@dataclass
class Instances:
    """Bodies ordered cranial -> caudal, their label maps, and the sacrum mask."""

    bodies: list[BodyInstance]
    body_map: NDArray[np.int16]  # body voxels labelled with BodyInstance.label
    vertebra_map: NDArray[np.int16]  # body + posterior elements
    sacrum: NDArray[np.bool_] | None


def _components(mask: NDArray[np.bool_]) -> tuple[NDArray[np.int32], int]:
    lab, n = ndimage.label(mask)
    return lab.astype(np.int32), int(n)


def _heights(lab: NDArray[np.int32], n: int, spacing: float) -> NDArray[np.float64]:
    out = np.zeros(n + 1)
    for idx, sl in enumerate(ndimage.find_objects(lab), start=1):
        if sl is not None:
            out[idx] = (sl[0].stop - sl[0].start) * spacing
    return out


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


def _cuts(k0: int, score: NDArray[np.float64], period: float, open_ends: tuple[bool, bool]
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


def _off_axis(centroids: NDArray[np.float64], weights: NDArray[np.float64]) -> NDArray[np.float64]:
    """Distance (voxels) of each centroid (k, j, i) from a robust quadratic spine line j,i(k)."""
    if len(centroids) < 4:  # too few for a line: distance from the biggest body
        ref = centroids[int(np.argmax(weights)), 1:]
        return np.asarray(np.linalg.norm(centroids[:, 1:] - ref, axis=1))
    keep = np.ones(len(centroids), dtype=bool)
    dist = np.zeros(len(centroids))
    for _ in range(3):
        k = centroids[keep, 0]
        deg = 2 if keep.sum() >= 5 else 1
        fits = [np.polyfit(k, centroids[keep, a], deg, w=np.sqrt(weights[keep])) for a in (1, 2)]
        pred = np.stack([np.polyval(f, centroids[:, 0]) for f in fits], axis=1)
        dist = np.linalg.norm(centroids[:, 1:] - pred, axis=1)
        new_keep = dist <= max(np.median(dist[keep]) * 3, 4.0)
        if (new_keep == keep).all():
            break
        keep = new_keep
    return np.asarray(dist)


def separate(
    classes: NDArray[np.uint8],
    hu: NDArray[np.float32],
    disc_prob: NDArray[np.float32],
    spacing: float,
    *,
    body_value: int,
    posterior_value: int,
    sacrum_value: int,
) -> Instances:
    """Vertebra instances from the class map of the network (all on the canonical grid)."""
    voxel_ml = spacing**3 / 1000.0
    lab, n = _components(classes == body_value)
    heights = _heights(lab, n, spacing)
    sizes = np.bincount(lab.ravel(), minlength=n + 1) * voxel_ml
    big = [h for h, s in zip(heights[1:], sizes[1:], strict=True) if s >= 3 * MIN_BODY_ML]
    typical = float(np.clip(np.median(big), 15.0, 32.0)) if big else DEFAULT_BODY_HEIGHT_MM

    # cut fused components (thin discs are often not resolved at the coarse spacing)
    pitch_lo, pitch_hi = int(np.ceil(MIN_PITCH_MM / spacing)), int(MAX_PITCH_MM / spacing)
    next_label = n + 1
    cut_ends: dict[int, tuple[bool, bool]] = {}  # label -> (bottom is a cut, top is a cut)
    for idx in range(1, n + 1):
        if heights[idx] < MIN_FUSED_MM:
            continue
        comp = lab == idx
        k0, score = _profile(comp, hu, disc_prob)
        period = _period(score, pitch_lo, pitch_hi)
        pitch = period * spacing if period is not None else typical * 1.15
        k_top = k0 + len(score) - 1
        # open: ends within one slice of the field of view (the edge slice is partial volume)
        open_ends = (k0 <= 1, k_top >= classes.shape[0] - 2)
        if heights[idx] < SPLIT_FACTOR * pitch and not (
            any(open_ends) and float(score[1:-1].max(initial=0.0)) >= EDGE_DISC_SCORE
        ):
            continue
        cuts = _cuts(k0, score, pitch / spacing, open_ends)
        if not cuts:
            continue
        bounds = [0, *cuts, classes.shape[0]]
        for lo, hi in itertools.pairwise(bounds):
            part = comp.copy()
            part[:lo] = False
            part[hi:] = False
            lab[part] = next_label
            cut_ends[next_label] = (lo in cuts, hi in cuts)
            next_label += 1
        for k in cuts:  # the cut slice itself belongs to neither body (it is the disc)
            lab[k][comp[k]] = 0

    # per-component properties
    objs = ndimage.find_objects(lab)
    cands: list[tuple[int, NDArray[np.float64], float, tuple[int, int], bool]] = []
    top = classes.shape[0] - 1
    for idx, sl in enumerate(objs, start=1):
        if sl is None:
            continue
        m = lab[sl] == idx
        vol = float(m.sum()) * voxel_ml
        touches = sl[0].start <= 1 or sl[0].stop - 1 >= top - 1  # as open_ends above
        if vol < (MIN_PARTIAL_ML if touches else MIN_BODY_ML):
            continue
        c = np.array(ndimage.center_of_mass(m)) + [s.start for s in sl]
        cands.append((idx, c, vol, (sl[0].start, sl[0].stop - 1), touches))
    if cands:
        cents = np.array([c[1] for c in cands])
        vols = np.array([c[2] for c in cands])
        off = _off_axis(cents, vols) * spacing
        cands = [c for c, d in zip(cands, off, strict=True) if d <= MAX_OFF_AXIS_MM]
        med_vol = float(np.median([c[2] for c in cands])) if cands else 0.0
        cands = [c for c in cands if c[2] >= 0.2 * med_vol or c[4]]
    sacrum = _sacrum(classes == sacrum_value, voxel_ml)
    if sacrum is not None:
        # nothing below the sacrum is a vertebral body (pelvis, coccyx); a "body" fused with the
        # sacrum is its S1 body
        sacrum_k = float(np.nonzero(sacrum)[0].mean())
        near_sacrum = ndimage.binary_dilation(sacrum, iterations=1)
        kept = []
        for c in cands:
            comp = lab == c[0]
            if c[1][0] <= sacrum_k:
                continue
            if (comp & near_sacrum).sum() >= SACRUM_CONTACT * comp.sum():
                sacrum |= comp
                continue
            kept.append(c)
        cands = kept
    cands.sort(key=lambda c: -c[1][0])  # cranial first
    cands = _merge_halves(cands, lab, typical, spacing, voxel_ml, cut_ends=cut_ends)

    body_map = np.zeros(classes.shape, dtype=np.int16)
    bodies: list[BodyInstance] = []
    for new, (idx, c, vol, kr, touches) in enumerate(cands, start=1):
        body_map[lab == idx] = new
        bodies.append(BodyInstance(new, (float(c[0]), float(c[1]), float(c[2])), kr, vol, touches,
                                   cut_endplate=any(cut_ends.get(idx, (False, False)))))

    vertebra_map = _grow(body_map, classes == posterior_value, int(GROW_STEPS_MM / spacing))
    return Instances(bodies=bodies, body_map=body_map, vertebra_map=vertebra_map, sacrum=sacrum)


Cand = tuple[int, NDArray[np.float64], float, tuple[int, int], bool]


def _merge_halves(cands: list[Cand], lab: NDArray[np.int32], typical: float, spacing: float,
                  voxel_ml: float, *, cut_ends: dict[int, tuple[bool, bool]]) -> list[Cand]:
    """Merge two consecutive small pieces that together are one body-sized block (a body cut in
    two by a spurious disc prediction). ``cands`` are cranial first; ``lab`` is relabelled and
    ``cut_ends`` updated (the merged body keeps the outer ends)."""
    if len(cands) < 3:
        return cands
    med = float(np.median([c[2] for c in cands]))
    out: list[Cand] = []
    i = 0
    while i < len(cands):
        c = cands[i]
        if i + 1 < len(cands):
            d = cands[i + 1]  # caudal neighbour
            height = (c[3][1] - d[3][0] + 1) * spacing
            around = [(e[3][1] - e[3][0] + 1) * spacing
                      for e in (cands[i - 1] if i > 0 else None,
                                cands[i + 2] if i + 2 < len(cands) else None)
                      if e is not None and not e[4]]
            local = float(np.median(around)) if around else typical  # bodies vary along spine
            if (c[2] < MERGE_FRACTION * med and d[2] < MERGE_FRACTION * med
                    and height <= MERGE_HEIGHT * local and not (c[4] or d[4])):
                lab[lab == d[0]] = c[0]
                cut_ends[c[0]] = (cut_ends.get(d[0], (False, False))[0],
                                  cut_ends.get(c[0], (False, False))[1])
                m = lab == c[0]
                cen = np.argwhere(m).mean(axis=0)
                out.append((c[0], cen, float(m.sum()) * voxel_ml, (d[3][0], c[3][1]), False))
                i += 2
                continue
        out.append(c)
        i += 1
    return out


def _grow(seeds: NDArray[np.int16], allowed: NDArray[np.bool_], steps: int) -> NDArray[np.int16]:
    """Geodesic growth of labelled seeds into ``allowed`` voxels (6-connected, ``steps`` rings)."""
    objs = ndimage.find_objects((allowed | (seeds > 0)).astype(np.uint8))
    if not objs or objs[0] is None:
        return seeds.copy()
    box = objs[0]
    grown_box = _grow_in_box(seeds[box], allowed[box], steps)
    out = seeds.copy()
    out[box] = grown_box
    return out


def _grow_in_box(seeds: NDArray[np.int16], allowed: NDArray[np.bool_], steps: int
                 ) -> NDArray[np.int16]:
    out = seeds.copy()
    free = allowed & (out == 0)
    cross = ndimage.generate_binary_structure(3, 1)
    for _ in range(steps):
        grown = ndimage.grey_dilation(out, footprint=cross)
        new = free & (grown > 0)
        if not new.any():
            break
        out[new] = grown[new]
        free &= ~new
    return out


def _sacrum(mask: NDArray[np.bool_], voxel_ml: float) -> NDArray[np.bool_] | None:
    lab, n = _components(mask)
    if n == 0:
        return None
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    best = int(np.argmax(sizes))
    if sizes[best] * voxel_ml < MIN_SACRUM_ML:
        return None
    return np.asarray(lab == best)
