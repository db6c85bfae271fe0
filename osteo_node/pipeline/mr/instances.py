"""Binary vertebral-body mask -> separate bodies, ordered head to feet.

Works on the canonical ``[LR, SI, AP]`` grid with its spacing (mm). Steps:
1. a small in-plane opening breaks thin bridges across the discs (seeds only);
2. 3D connected components of the opened mask; fragments under ``min_volume_mm3`` are dropped;
3. a component much taller (cranio-caudally) than the typical body is split: first by eroding it
   until it falls apart into body cores (follows tilted discs), else by cutting at the row of
   smallest cross-section; its voxels go to the nearest core;
4. mask voxels removed by the opening go back to the nearest body within ``regrow_mm``;
5. bodies are numbered 1..n by centroid from head to feet.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage


@dataclass(frozen=True)
class InstanceParams:
    opening_radius_mm: float = 1.5
    min_volume_mm3: float = 2500.0
    typical_height_mm: float = 28.0  # used only when no body gives a reference height
    split_factor: float = 1.6  # a component taller than this x reference height is split
    edge_split_factor: float = 1.25  # same, for a component cut by the cranio-caudal FOV edge
    max_erosion_mm: float = 6.0
    regrow_mm: float = 4.0
    small_fraction: float = 0.35  # parts under this x median body volume are fragments
    merge_gap_mm: float = 4.0  # a fragment this close to a body is part of it, else dropped


@dataclass
class BodyInstances:
    labels: NDArray[np.int32]  # canonical grid, 0 = background, 1..n head to feet
    count: int
    split_components: int = 0
    dropped_fragments: int = 0
    notes: list[str] = field(default_factory=list)


def _disk(radius_mm: float, spacing_rc: tuple[float, float]) -> NDArray[np.bool_]:
    rr = max(1, round(radius_mm / spacing_rc[0]))
    rc = max(1, round(radius_mm / spacing_rc[1]))
    y, x = np.mgrid[-rr : rr + 1, -rc : rc + 1]
    return ((y * spacing_rc[0] / radius_mm) ** 2 + (x * spacing_rc[1] / radius_mm) ** 2) <= 1.0


def _si_extent_mm(comp: NDArray[np.bool_], sp_si: float) -> float:
    rows = np.flatnonzero(comp.any(axis=(0, 2)))
    return float(rows[-1] - rows[0] + 1) * sp_si if rows.size else 0.0


def _assign_nearest(
    comp: NDArray[np.bool_], seeds: NDArray[np.int32], spacing: tuple[float, float, float]
) -> NDArray[np.int32]:
    """Label every voxel of ``comp`` with the nearest seed label."""
    _, idx = ndimage.distance_transform_edt(seeds == 0, sampling=spacing, return_indices=True)
    nearest = seeds[tuple(idx)]
    return np.where(comp, nearest, 0).astype(np.int32)


def _split_by_erosion(
    comp: NDArray[np.bool_], spacing: tuple[float, float, float], params: InstanceParams
) -> NDArray[np.int32] | None:
    step = min(spacing[1], spacing[2])
    min_core = params.min_volume_mm3 * 0.1 / float(np.prod(spacing))
    eroded = comp
    radius = 0.0
    while radius < params.max_erosion_mm:
        eroded = ndimage.binary_erosion(eroded, structure=_disk(step, spacing[1:])[None])
        radius += step
        cores, n = ndimage.label(eroded)
        if n >= 2:
            sizes = ndimage.sum_labels(eroded, cores, index=np.arange(1, n + 1))
            keep = np.flatnonzero(sizes >= min_core) + 1
            if keep.size >= 2:
                seeds = np.where(np.isin(cores, keep), cores, 0).astype(np.int32)
                return _assign_nearest(comp, seeds, spacing)
        if not eroded.any():
            return None
    return None


def _split_by_profile(comp: NDArray[np.bool_], ref_rows: int) -> NDArray[np.int32]:
    """Cut at the SI row of smallest cross-section, at least 0.6 reference heights from each end."""
    profile = comp.sum(axis=(0, 2)).astype(np.float64)
    rows = np.flatnonzero(profile)
    lo, hi = rows[0] + int(0.6 * ref_rows), rows[-1] - int(0.6 * ref_rows)
    if hi <= lo:
        return comp.astype(np.int32)
    cut = lo + int(np.argmin(profile[lo : hi + 1]))
    out = comp.astype(np.int32)
    out[:, cut + 1 :, :] *= 2
    return out


def _split_component(
    comp: NDArray[np.bool_],
    spacing: tuple[float, float, float],
    ref_height_mm: float,
    params: InstanceParams,
    factor: float,
) -> list[NDArray[np.bool_]]:
    """Recursively split a too-tall component into body-sized parts (works in its bounding box)."""
    if _si_extent_mm(comp, spacing[1]) <= factor * ref_height_mm:
        return [comp]
    idx = np.argwhere(comp)
    lo = np.maximum(idx.min(axis=0) - 1, 0)
    hi = np.minimum(idx.max(axis=0) + 2, comp.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    sub = comp[box]
    parts = _split_by_erosion(sub, spacing, params)
    if parts is None or parts.max() < 2:
        parts = _split_by_profile(sub, round(ref_height_mm / spacing[1]))
    if parts.max() < 2:
        return [comp]
    out: list[NDArray[np.bool_]] = []
    for v in range(1, int(parts.max()) + 1):
        part = np.zeros_like(comp)
        part[box] = parts == v
        if part.any():
            out.extend(_split_component(part, spacing, ref_height_mm, params, factor))
    return out


def _absorb_fragments(
    parts: list[NDArray[np.bool_]], spacing: tuple[float, float, float], params: InstanceParams
) -> tuple[list[NDArray[np.bool_]], int, int]:
    """Join small parts to a body within ``merge_gap_mm`` (same vertebra), drop the others.

    Returns (bodies, fragments joined, fragments dropped).
    """
    if len(parts) < 2:
        return parts, 0, 0
    vols = np.array([float(p.sum()) for p in parts])
    small = vols < params.small_fraction * float(np.median(vols))
    if not small.any() or small.all():
        return parts, 0, 0
    big = [p.copy() for p, s in zip(parts, small, strict=True) if not s]
    seeds = np.zeros(parts[0].shape, dtype=np.int32)
    for v, p in enumerate(big, start=1):
        seeds[p] = v
    dist, idx = ndimage.distance_transform_edt(seeds == 0, sampling=spacing, return_indices=True)
    joined = dropped = 0
    for p, s in zip(parts, small, strict=True):
        if not s:
            continue
        where = np.argwhere(p)
        d = dist[tuple(where.T)]
        k = int(np.argmin(d))
        if float(d[k]) <= params.merge_gap_mm:
            target = int(seeds[tuple(i[tuple(where[k])] for i in idx)])
            big[target - 1] |= p
            joined += 1
        else:
            dropped += 1
    return big, joined, dropped


def separate_bodies(
    mask: NDArray[np.bool_],
    spacing: tuple[float, float, float],
    params: InstanceParams | None = None,
) -> BodyInstances:
    """Instance labels (1..n, head to feet) from a binary body mask on the canonical grid."""
    params = params or InstanceParams()
    mask = np.asarray(mask, dtype=bool)
    labels = np.zeros(mask.shape, dtype=np.int32)
    if not mask.any():
        return BodyInstances(labels, 0, notes=["no vertebral body found"])
    lo = np.argwhere(mask).min(axis=0)
    hi = np.argwhere(mask).max(axis=0) + 1
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    sub = mask[box]
    voxel = float(np.prod(spacing))
    opened = ndimage.binary_opening(
        sub, structure=_disk(params.opening_radius_mm, spacing[1:])[None]
    )
    comps, n = ndimage.label(opened)
    sizes = ndimage.sum_labels(opened, comps, index=np.arange(1, n + 1)) * voxel
    kept = [i + 1 for i in range(n) if sizes[i] >= params.min_volume_mm3]
    dropped = n - len(kept)
    comp_masks = [comps == v for v in kept]
    heights = [_si_extent_mm(c, spacing[1]) for c in comp_masks]
    plausible = [h for h in heights if 12.0 <= h <= 45.0]
    ref = float(np.median(plausible)) if plausible else params.typical_height_mm
    parts: list[NDArray[np.bool_]] = []
    n_split = 0
    n_rows = mask.shape[1]
    for c in comp_masks:
        rows = np.flatnonzero(c.any(axis=(0, 2))) + lo[1]
        at_edge = rows[0] == 0 or rows[-1] == n_rows - 1
        factor = params.edge_split_factor if at_edge else params.split_factor
        pieces = _split_component(c, spacing, ref, params, factor)
        n_split += len(pieces) > 1
        parts.extend(p for p in pieces if p.sum() * voxel >= params.min_volume_mm3 * 0.5)
    parts, merged, small_dropped = _absorb_fragments(parts, spacing, params)
    dropped += small_dropped
    seeds = np.zeros(sub.shape, dtype=np.int32)
    for v, p in enumerate(parts, start=1):
        seeds[p] = v
    if parts:
        dist, idx = ndimage.distance_transform_edt(
            seeds == 0, sampling=spacing, return_indices=True
        )
        regrow = sub & (seeds == 0) & (dist <= params.regrow_mm)
        seeds[regrow] = seeds[tuple(i[regrow] for i in idx)]
    # order head to feet by centroid SI row
    order = sorted(
        range(1, len(parts) + 1),
        key=lambda v: float(np.argwhere(seeds == v)[:, 1].mean()),
    )
    remap = np.zeros(len(parts) + 1, dtype=np.int32)
    for new, old in enumerate(order, start=1):
        remap[old] = new
    labels[box] = remap[seeds]
    notes = []
    if merged:
        notes.append(f"{merged} fragment(s) joined to the adjacent body")
    if n_split:
        notes.append(f"{n_split} merged component(s) split cranio-caudally")
    return BodyInstances(labels, len(parts), n_split, dropped, notes)
