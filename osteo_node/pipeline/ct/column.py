"""Find the spinal column by tracking the spinal canal through the scan (no training data).

A vertebra is a ring of bone around the spinal canal with the vertebral body in front of it; no
other structure of the trunk looks like that. On a coarse axis-aligned grid (``WORKING_MM``) every
voxel gets a *canal score*, the product of

- **enclosure**: the fraction of in-plane rays (``RAYS`` directions) that meet bone between
  ``RAY_FROM_MM`` and ``RAY_TO_MM`` from the voxel (the body in front, the pedicles at the
  sides, the laminae behind); the first millimetres are skipped so that a canal filled with
  myelographic contrast still counts;
- **contents**: soft tissue or fluid (CSF, cord, epidural fat), contrast at half weight, never
  cortical bone;
- **a body in front**: mean bone-like attenuation in a box ``BODY_BOX_MM`` anterior of the
  voxel (an opacified vessel or heart chamber has none: nothing bony lies in front of it);
- **bone behind**: any bone in a box ``ARCH_BOX_MM`` posterior (laminae, spinous process).

A dynamic programme then picks the best *continuous* path through the slices (start and end
anywhere, at most ``MAX_STEP_MM`` in-plane movement per slice), which bridges the disc levels
where the ring is open. The path is the canal centreline; everything downstream looks for
vertebrae only along it, so nothing off the column can be reported as a vertebra.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from osteo_node.pipeline.ct.working_grid import crop_to_body, to_canonical_grid
from osteo_node.pipeline.types import Geometry, Volume

WORKING_MM = 2.0
BONE_HU = 200.0
RAYS = 16
RAY_FROM_MM = 3.0
RAY_TO_MM = 16.0  # the canal's bony ring lies within this; a lumbar body's cortex mostly not
CONTENT_MIN_HU = -200.0
CONTENT_FULL_HU = 50.0  # CSF, cord, epidural fat: full weight
CONTENT_ZERO_HU = 130.0  # trabecular bone and denser: no canal (linear in between)
BODY_BOX_MM = (8.0, 35.0, 8.0)  # from, to (anterior of the voxel), half width
BODY_HU_FULL = 150.0  # bone-like attenuation that counts fully as "a body in front"
BODY_MIN_FRACTION = 0.6
ARCH_BOX_MM = (5.0, 30.0, 6.0)  # from, to (posterior of the voxel), half width
ARCH_MIN_FRACTION = 0.1
LATERAL_FULL_MM = 30.0  # the canal lies this close to the trunk's left-right centre...
LATERAL_SEARCH_MM = 60.0  # ... and never further (weight falls linearly to 0 in between)
SCORE_BIAS = 0.3
MAX_STEP_MM = 4.0  # antero-posterior movement per slice step (about 63 degrees at 2 mm)
MAX_LATERAL_STEP_MM = 2.0  # left-right movement per slice step (45 degrees)
MOVE_PENALTY = 0.02  # per squared cell of movement
MIN_LENGTH_MM = 20.0
SMOOTH_MM = 10.0  # removes the vertebra-disc zigzag of the raw path (period 20-35 mm)
TRUNK_HU = -400.0


@dataclass(frozen=True)
class SpinalCanal:
    """The canal centreline: one point per working-grid slice, cranial -> caudal order not
    assumed (``z_mm`` increases). Coordinates are LPS millimetres; ``score`` is the canal score
    of the path at that slice (0..1)."""

    z_mm: NDArray[np.float64]
    x_mm: NDArray[np.float64]
    y_mm: NDArray[np.float64]
    score: NDArray[np.float64]

    @property
    def length_mm(self) -> float:
        return float(self.z_mm[-1] - self.z_mm[0]) if len(self.z_mm) else 0.0

    def at(self, z: NDArray[np.float64] | float) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Canal centre (x, y) at height(s) ``z`` (held constant beyond the ends)."""
        zz = np.asarray(z, dtype=np.float64)
        return (np.interp(zz, self.z_mm, self.x_mm), np.interp(zz, self.z_mm, self.y_mm))


def _shifted(a: NDArray[np.bool_], oj: int, oi: int) -> NDArray[np.bool_]:
    """``out[k, j, i] = a[k, j + oj, i + oi]`` (False outside)."""
    _, nj, ni = a.shape
    out = np.zeros_like(a)
    if abs(oj) >= nj or abs(oi) >= ni:
        return out
    out[:, max(0, -oj): nj - max(0, oj), max(0, -oi): ni - max(0, oi)] = \
        a[:, max(0, oj): nj - max(0, -oj), max(0, oi): ni - max(0, -oi)]
    return out


def enclosure(bone: NDArray[np.bool_], spacing: float) -> NDArray[np.float32]:
    """Fraction of in-plane rays from each voxel that meet ``bone`` between RAY_FROM_MM and
    RAY_TO_MM."""
    n0 = max(1, round(RAY_FROM_MM / spacing))
    n1 = max(n0, round(RAY_TO_MM / spacing))
    hits = np.zeros(bone.shape, dtype=np.uint8)
    for a in range(RAYS):
        theta = 2.0 * np.pi * a / RAYS
        dj, di = np.sin(theta), np.cos(theta)
        hit = np.zeros(bone.shape, dtype=bool)
        seen: set[tuple[int, int]] = set()
        for s in range(n0, n1 + 1):
            o = (round(s * dj), round(s * di))
            if o not in seen:
                seen.add(o)
                hit |= _shifted(bone, *o)
        hits += hit
    return np.asarray(hits, dtype=np.float32) * np.float32(1.0 / RAYS)


def _box_mean(x: NDArray[np.float32], spacing: float, box_mm: tuple[float, float, float],
              sign: int) -> NDArray[np.float32]:
    """Mean of ``x`` over a box from box[0] to box[1] mm along ``sign`` * j (+P), +- box[2] in i."""
    a, b = round(box_mm[0] / spacing), round(box_mm[1] / spacing)
    h = round(box_mm[2] / spacing)
    mean = ndimage.uniform_filter(x, size=(1, b - a + 1, 2 * h + 1), mode="constant")
    centre = sign * (a + b) // 2
    _, nj, _ = x.shape
    out = np.zeros_like(mean)
    if abs(centre) < nj:
        out[:, max(0, -centre): nj - max(0, centre)] = \
            mean[:, max(0, centre): nj - max(0, -centre)]
    return out


def canal_score(hu: NDArray[np.float32], spacing: float) -> NDArray[np.float32]:
    """Canal score (0..1) of every voxel of an axis-aligned LPS grid ``[k, j, i]``."""
    smooth = ndimage.uniform_filter(hu, size=(1, 3, 3))
    bone = hu > BONE_HU
    content = np.clip((CONTENT_ZERO_HU - smooth) / (CONTENT_ZERO_HU - CONTENT_FULL_HU),
                      0.0, 1.0).astype(np.float32)
    content[smooth < CONTENT_MIN_HU] = 0.0
    body = _box_mean(np.clip(hu / BODY_HU_FULL, 0.0, 1.0).astype(np.float32), spacing,
                     BODY_BOX_MM, -1)
    arch = _box_mean(bone.astype(np.float32), spacing, ARCH_BOX_MM, +1)
    score: NDArray[np.float32] = enclosure(bone, spacing) * content
    score *= np.clip(body / BODY_MIN_FRACTION, 0.0, 1.0)
    score *= np.clip(arch / ARCH_MIN_FRACTION, 0.0, 1.0)
    return score


def _lateral_window(hu: NDArray[np.float32], spacing: float) -> tuple[slice, NDArray[np.float32]]:
    """Columns (i) within LATERAL_SEARCH_MM of the trunk's median left-right centre, and the
    lateral weight of each of them."""
    trunk = hu > TRUNK_HU
    centres = []
    for k in range(0, hu.shape[0], max(1, hu.shape[0] // 32)):
        lab, n = ndimage.label(trunk[k])
        if n == 0:
            continue
        sizes = np.bincount(lab.ravel())
        sizes[0] = 0
        ii = np.nonzero(lab == int(np.argmax(sizes)))[1]
        centres.append(float(ii.mean()))
    ni = hu.shape[2]
    c = float(np.median(centres)) if centres else (ni - 1) / 2.0
    half = LATERAL_SEARCH_MM / spacing
    cols = slice(max(0, int(c - half)), min(ni, int(np.ceil(c + half)) + 1))
    dist = np.abs(np.arange(cols.start, cols.stop) - c) * spacing
    weight = np.clip((LATERAL_SEARCH_MM - dist) / (LATERAL_SEARCH_MM - LATERAL_FULL_MM), 0, 1)
    return cols, weight.astype(np.float32)


def best_path(score: NDArray[np.float32], steps: tuple[int, int], bias: float,
              penalty: float) -> dict[int, tuple[int, int]]:
    """Highest-scoring continuous path through the slices of ``score`` [k, j, i] (score minus
    ``bias`` summed; start and end anywhere; at most ``steps`` (j, i) cells per slice).
    ``{k: (j, i)}``."""
    nk, nj, ni = score.shape
    s = ndimage.uniform_filter(score, size=(1, 3, 3)) - np.float32(bias)
    dp = np.empty((nk, nj, ni), dtype=np.float32)
    back = np.zeros((nk, nj, ni), dtype=np.int16)  # index into offsets, -1 = path starts here
    offsets = [(dj, di) for dj in range(-steps[0], steps[0] + 1)
               for di in range(-steps[1], steps[1] + 1)]
    dp[0] = s[0]
    back[0] = -1
    for k in range(1, nk):
        prev = dp[k - 1]
        best = np.zeros((nj, ni), dtype=np.float32)  # starting fresh scores 0
        arg = np.full((nj, ni), -1, dtype=np.int16)
        for n, (dj, di) in enumerate(offsets):
            cand = np.full((nj, ni), -np.inf, dtype=np.float32)
            cand[max(0, -dj): nj - max(0, dj), max(0, -di): ni - max(0, di)] = \
                prev[max(0, dj): nj - max(0, -dj), max(0, di): ni - max(0, -di)]
            cand -= np.float32(penalty * (dj * dj + di * di))
            better = cand > best
            best[better] = cand[better]
            arg[better] = n
        dp[k] = best + s[k]
        back[k] = arg
    flat = dp.reshape(nk, -1)
    k = int(np.argmax(flat.max(axis=1)))
    j, i = (int(v) for v in np.unravel_index(int(np.argmax(dp[k])), (nj, ni)))
    path: dict[int, tuple[int, int]] = {}
    while True:
        path[k] = (j, i)
        n = int(back[k, j, i])
        if n < 0 or k == 0:
            break
        dj, di = offsets[n]
        j, i, k = j + dj, i + di, k - 1
    return path


def track_canal(hu: NDArray[np.float32], geometry: Geometry) -> SpinalCanal | None:
    """The canal centreline in an axis-aligned LPS image ``[k, j, i]`` (k = +S), or None when
    no continuous canal of at least MIN_LENGTH_MM is found (spine not in the field of view)."""
    spacing = float(geometry.spacing[0])
    cols, weight = _lateral_window(hu, spacing)
    sub = np.ascontiguousarray(hu[:, :, cols])
    score = canal_score(sub, spacing) * weight[None, None, :]
    steps = (max(1, round(MAX_STEP_MM / spacing)), max(1, round(MAX_LATERAL_STEP_MM / spacing)))
    path = best_path(score, steps, SCORE_BIAS, MOVE_PENALTY)
    ks = np.array(sorted(path), dtype=np.int64)
    if len(ks) * spacing < MIN_LENGTH_MM:
        return None
    jj = np.array([path[int(k)][0] for k in ks], dtype=np.float64)
    ii = np.array([path[int(k)][1] for k in ks], dtype=np.float64) + cols.start
    values = np.array([score[int(k), path[int(k)][0], path[int(k)][1]] for k in ks])
    sigma = SMOOTH_MM / spacing
    jj = ndimage.gaussian_filter1d(jj, sigma, mode="nearest")
    ii = ndimage.gaussian_filter1d(ii, sigma, mode="nearest")
    lps = geometry.index_to_lps(np.stack([ii, jj, ks.astype(np.float64)], axis=1))
    return SpinalCanal(z_mm=lps[:, 2], x_mm=lps[:, 0], y_mm=lps[:, 1],
                       score=np.asarray(values, dtype=np.float64))


def find_canal(volume: Volume) -> SpinalCanal | None:
    """:func:`track_canal` on the volume brought onto the WORKING_MM axis-aligned grid."""
    hu, geo = crop_to_body(*to_canonical_grid(volume, WORKING_MM))
    return track_canal(hu, geo)
