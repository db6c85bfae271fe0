"""Which vertebrae bear ribs: bone that starts at a vertebra and reaches far laterally.

On an axis-aligned grid (HU): bone is HU >= ``BONE_HU``; the vertebrae (and sacrum) found are
removed (with a one-voxel margin); what remains is split into connected components. A component
is *rib-like* when it reaches at least ``MIN_LATERAL_MM`` from the spine's midline (ribs curve
far out; lumbar transverse processes end closer), is not a whole skull or pelvis (more than
``MAX_RIB_ML``) and is not part of the pelvis (nothing below the top of the sacrum). Its voxels
within ``CONTACT_MM`` of a vertebra, and off the midline, are contacts (costovertebral and
costotransverse joints); each contact votes for the vertebra it touches (volumes in mm^3, so the
rule does not depend on the grid).

:func:`bearing` decides per vertebra: enough contact in absolute terms and compared with the
vertebrae within two levels (the twelfth rib runs down past the first lumbar transverse process
and touches it a little; that is not a rib of L1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

BONE_HU = 180.0
MIN_LATERAL_MM = 60.0
MIN_RIB_ML = 0.8
MAX_RIB_ML = 120.0  # a skull or a pelvis touching the column is not a rib
CONTACT_MM = 7.0
MIN_OFF_MIDLINE_MM = 8.0
MIN_CONTACT_MM3 = 54.0  # two voxels of the 3 mm grid the rule was first set on
RELATIVE_CONTACT = 0.2  # ... and at least this share of the most contact within two levels


@dataclass(frozen=True)
class RibEvidence:
    """Rib contact of one vertebra (mm^3 on its left and right side)."""

    left: float
    right: float

    @property
    def contact(self) -> float:
        return max(self.left, self.right)


def bearing(evidence: dict[int, RibEvidence]) -> dict[int, bool]:
    """Rib-bearing per label, labels numbered consecutively along the column."""
    out = {}
    for label, ev in evidence.items():
        near = [evidence[n].contact for n in range(label - 2, label + 3) if n in evidence]
        out[label] = ev.contact >= max(MIN_CONTACT_MM3, RELATIVE_CONTACT * max(near))
    return out


def _midline_i(centroids_kji: NDArray[np.float64], n_k: int) -> NDArray[np.float64]:
    """Midline column (i) for every slice k, interpolated between body centroids."""
    order = np.argsort(centroids_kji[:, 0])
    k, i = centroids_kji[order, 0], centroids_kji[order, 2]
    return np.asarray(np.interp(np.arange(n_k), k, i))


def rib_evidence(
    hu: NDArray[np.float32],
    vertebra_map: NDArray[np.int16],
    sacrum: NDArray[np.bool_] | None,
    centroids_kji: NDArray[np.float64],
    spacing: float,
) -> dict[int, RibEvidence]:
    """Rib contacts per vertebra label of ``vertebra_map`` (labels without ribs map to 0, 0)."""
    labels = [int(v) for v in np.unique(vertebra_map) if v > 0]
    out = {v: RibEvidence(0.0, 0.0) for v in labels}
    if not labels or len(centroids_kji) == 0:
        return out
    spine = vertebra_map > 0
    if sacrum is not None:
        spine |= sacrum
    spine_margin = ndimage.binary_dilation(spine, iterations=1)
    cand = (hu >= BONE_HU) & ~spine_margin
    lab, n = ndimage.label(cand, structure=np.ones((3, 3, 3), dtype=bool))
    if n == 0:
        return out
    mid = _midline_i(centroids_kji, hu.shape[0])
    sacrum_top = int(np.nonzero(sacrum.any(axis=(1, 2)))[0].max()) if sacrum is not None else -1
    voxel_ml = spacing**3 / 1000.0
    rib_like = np.zeros(n + 1, dtype=bool)
    for idx, sl in enumerate(ndimage.find_objects(lab), start=1):
        if sl is None:
            continue
        m = lab[sl] == idx
        if not MIN_RIB_ML <= m.sum() * voxel_ml <= MAX_RIB_ML:
            continue
        kk, _, ii = np.nonzero(m)
        kk = kk + sl[0].start
        ii = ii + sl[2].start
        if sacrum_top >= 0 and kk.min() <= sacrum_top:
            continue  # pelvis
        reach = np.abs(ii - mid[kk]).max() * spacing
        rib_like[idx] = reach >= MIN_LATERAL_MM
    ribs = rib_like[lab]
    if not ribs.any():
        return out
    margin = int(np.ceil(CONTACT_MM / spacing)) + 1
    vbox = ndimage.find_objects((vertebra_map > 0).astype(np.uint8))[0]
    box = tuple(slice(max(0, s.start - margin), min(n_, s.stop + margin))
                for s, n_ in zip(vbox, vertebra_map.shape, strict=True))
    vm = vertebra_map[box]
    dist, nearest = ndimage.distance_transform_edt(vm == 0, sampling=spacing,
                                                   return_indices=True)
    contact = ribs[box] & (dist <= CONTACT_MM)
    kk, _jj, ii = np.nonzero(contact)
    owner = vm[nearest[0][contact], nearest[1][contact], nearest[2][contact]]
    kk = kk + box[0].start
    ii = ii + box[2].start
    side = (ii - mid[kk]) * spacing
    counts: dict[int, list[int]] = {v: [0, 0] for v in labels}
    for v, s in zip(owner.tolist(), side.tolist(), strict=True):
        if v in counts and abs(s) >= MIN_OFF_MIDLINE_MM:
            counts[v][0 if s > 0 else 1] += 1  # canonical i increases towards patient left
    voxel = spacing**3
    return {v: RibEvidence(left=c[0] * voxel, right=c[1] * voxel) for v, c in counts.items()}
