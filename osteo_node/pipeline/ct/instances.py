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

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from osteo_node.pipeline.ct.fused_columns import ClassGrid, split_fused

MIN_BODY_ML = 1.0  # smaller body fragments are noise
MIN_PARTIAL_ML = 0.3  # ... unless cut by the top/bottom of the field of view
MIN_SACRUM_ML = 10.0
SACRUM_CONTACT = 0.08  # a body with this fraction of voxels touching the sacrum is S1
DEFAULT_BODY_HEIGHT_MM = 24.0
MERGE_FRACTION = 0.65  # two consecutive pieces each smaller than this x the median body...
MERGE_HEIGHT = 1.25  # ...and together no taller than this x the typical body are one body
MAX_OFF_AXIS_MM = 35.0
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


# (label in the component map, centroid (k, j, i), volume ml, k range inclusive, touches fov)
Cand = tuple[int, NDArray[np.float64], float, tuple[int, int], bool]


def _typical_height(heights: NDArray[np.float64], sizes: NDArray[np.floating[Any]]) -> float:
    """Median height (mm) of the clearly body-sized components, within plausible limits."""
    big = [h for h, s in zip(heights[1:], sizes[1:], strict=True) if s >= 3 * MIN_BODY_ML]
    return float(np.clip(np.median(big), 15.0, 32.0)) if big else DEFAULT_BODY_HEIGHT_MM


def _candidates(lab: NDArray[np.int32], grid: ClassGrid) -> list[Cand]:
    """Per-component properties of the pieces big enough to be (partial) bodies."""
    cands: list[Cand] = []
    top = grid.n_slices - 1
    for idx, sl in enumerate(ndimage.find_objects(lab), start=1):
        if sl is None:
            continue
        m = lab[sl] == idx
        vol = float(m.sum()) * grid.voxel_ml
        touches = sl[0].start <= 1 or sl[0].stop - 1 >= top - 1  # as open_ends in fused_columns
        if vol < (MIN_PARTIAL_ML if touches else MIN_BODY_ML):
            continue
        c = np.array(ndimage.center_of_mass(m)) + [s.start for s in sl]
        cands.append((idx, c, vol, (sl[0].start, sl[0].stop - 1), touches))
    return cands


def _on_spine(cands: list[Cand], spacing: float) -> list[Cand]:
    """Drop pieces far from the spine line and small pieces (unless cut by the field of view)."""
    if not cands:
        return cands
    cents = np.array([c[1] for c in cands])
    vols = np.array([c[2] for c in cands])
    off = _off_axis(cents, vols) * spacing
    cands = [c for c, d in zip(cands, off, strict=True) if d <= MAX_OFF_AXIS_MM]
    med_vol = float(np.median([c[2] for c in cands])) if cands else 0.0
    return [c for c in cands if c[2] >= 0.2 * med_vol or c[4]]


def _above_sacrum(cands: list[Cand], lab: NDArray[np.int32], sacrum: NDArray[np.bool_]
                  ) -> list[Cand]:
    """Nothing below the sacrum is a vertebral body (pelvis, coccyx); a "body" fused with the
    sacrum is its S1 body and is added to ``sacrum`` (in place)."""
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
    return kept


def _body_instances(
    cands: list[Cand], lab: NDArray[np.int32], cut_ends: dict[int, tuple[bool, bool]],
    shape: tuple[int, ...],
) -> tuple[list[BodyInstance], NDArray[np.int16]]:
    """Bodies numbered 1.. in the order of ``cands`` and their label map."""
    body_map = np.zeros(shape, dtype=np.int16)
    bodies: list[BodyInstance] = []
    for new, (idx, c, vol, kr, touches) in enumerate(cands, start=1):
        body_map[lab == idx] = new
        bodies.append(BodyInstance(new, (float(c[0]), float(c[1]), float(c[2])), kr, vol, touches,
                                   cut_endplate=any(cut_ends.get(idx, (False, False)))))
    return bodies, body_map


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
    grid = ClassGrid(classes, hu, disc_prob, spacing)
    voxel_ml = grid.voxel_ml
    lab, n = _components(classes == body_value)
    heights = _heights(lab, n, spacing)
    sizes = np.bincount(lab.ravel(), minlength=n + 1) * voxel_ml
    typical = _typical_height(heights, sizes)
    cut_ends = split_fused(lab, n, heights, typical, grid)
    cands = _on_spine(_candidates(lab, grid), spacing)
    sacrum = _sacrum(classes == sacrum_value, voxel_ml)
    if sacrum is not None:
        cands = _above_sacrum(cands, lab, sacrum)
    cands.sort(key=lambda c: -c[1][0])  # cranial first
    cands = _merge_halves(cands, lab, typical, spacing, voxel_ml, cut_ends=cut_ends)
    bodies, body_map = _body_instances(cands, lab, cut_ends, classes.shape)
    vertebra_map = _grow(body_map, classes == posterior_value, int(GROW_STEPS_MM / spacing))
    return Instances(bodies=bodies, body_map=body_map, vertebra_map=vertebra_map, sacrum=sacrum)


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
