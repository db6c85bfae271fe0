"""Which vertebrae bear ribs: where the ribs' heads meet the column.

On an axis-aligned grid (HU, ``k`` = +S): bone is HU >= ``BONE_HU``; the vertebrae (and sacrum)
found are removed (with a one-voxel margin); what remains is split into connected components. A
component is *rib-like* when it reaches at least ``MIN_LATERAL_MM`` from the spine's midline
(ribs curve far out; transverse processes end closer), is not the skull (nothing more than
``ABOVE_COLUMN_MM`` above the highest vertebra) and is not part of the pelvis (nothing below the
top of the sacrum). The whole rib cage may be one component (calcified costal cartilage joins
the ribs to the sternum), so the ribs are told apart next to the spine: the rib-like bone in the
paraspinal band (``BAND_MM`` from the midline, ``BAND_AP_MM`` of the canal) splits into one
piece per rib neck. A piece whose medial end lies within ``CONTACT_MM`` of a vertebra is a rib;
its head belongs to the vertebra whose body spans that height: the rib head sits on its own
body or on the disc above it (the demifacets of T1-T10), never lower (Gray's Anatomy, 42nd ed.,
thoracic vertebrae). So the twelfth rib running down past the first lumbar transverse process is
not a rib of L1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

BONE_HU = 180.0
MIN_LATERAL_MM = 60.0
MIN_RIB_ML = 0.8
ABOVE_COLUMN_MM = 15.0  # bone reaching this far above the highest vertebra is the skull
BAND_MM = (10.0, 45.0)  # rib necks: this far from the midline ...
BAND_AP_MM = 30.0  # ... and within this antero-posterior distance of the canal
CONTACT_MM = 7.0
HEAD_ABOVE_DISC_MM = 6.0  # a rib head up to this far above a body's upper disc is its rib
MIN_PIECE_MM3 = 40.0


@dataclass(frozen=True)
class RibEvidence:
    """Rib heads found at one vertebra, on its left and right side."""

    left: int
    right: int
    # heads given to this vertebra by height although the bone they touch is the vertebra
    # above (a head at the disc between them: the demifacet rule of ribs 2-10)
    touching_above: int = 0

    @property
    def bears_ribs(self) -> bool:
        return self.left + self.right > 0

    @property
    def only_at_disc_above(self) -> bool:
        """Every head lies at the disc above and touches the vertebra above: for the LAST
        rib-bearing vertebra that is as well the rib of the vertebra above (T11 and T12 have
        whole facets on their own body, no demifacet on the disc below them)."""
        return self.bears_ribs and self.touching_above == self.left + self.right


def _rib_like(cand: NDArray[np.bool_], mid_i: NDArray[np.float64], spacing: float,
              column_top: int, sacrum_top: int) -> NDArray[np.bool_]:
    lab, n = ndimage.label(cand, structure=np.ones((3, 3, 3), dtype=bool))
    keep = np.zeros(n + 1, dtype=bool)
    voxel_ml = spacing**3 / 1000.0
    above = round(ABOVE_COLUMN_MM / spacing)
    for idx, sl in enumerate(ndimage.find_objects(lab), start=1):
        if sl is None or sl[0].stop - 1 > column_top + above:
            continue
        m = lab[sl] == idx
        if m.sum() * voxel_ml < MIN_RIB_ML:
            continue
        kk, _, ii = np.nonzero(m)
        kk = kk + sl[0].start
        if sacrum_top >= 0 and kk.min() <= sacrum_top:
            continue  # pelvis
        reach = np.abs(ii + sl[2].start - mid_i[kk]).max() * spacing
        keep[idx] = reach >= MIN_LATERAL_MM
    return np.asarray(keep[lab])


def rib_heads(
    hu: NDArray[np.float32],
    vertebra_map: NDArray[np.int16],
    sacrum: NDArray[np.bool_] | None,
    canal_ji: NDArray[np.float64],
    spacing: float,
) -> tuple[list[tuple[float, float, int]], bool]:
    """Rib heads as (k, lateral offset mm (+ = patient left), nearest vertebra label), and
    whether rib-like bone is in view at all (a thin slab can show ribs but no rib head).

    ``canal_ji``: the canal centre (j, i) for every slice k of the grid."""
    spine = vertebra_map > 0
    if not spine.any():
        return [], False
    if sacrum is not None:
        spine = spine | sacrum
    cand = (hu >= BONE_HU) & ~ndimage.binary_dilation(spine, iterations=1)
    column_top = int(np.nonzero(spine.any(axis=(1, 2)))[0].max())
    sacrum_top = int(np.nonzero(sacrum.any(axis=(1, 2)))[0].max()) \
        if sacrum is not None and sacrum.any() else -1
    ribs = _rib_like(cand, canal_ji[:, 1], spacing, column_top, sacrum_top)
    if not ribs.any():
        return [], False
    _, nj, ni = hu.shape
    lateral = (np.arange(ni)[None, None, :] - canal_ji[:, 1][:, None, None]) * spacing
    ap = (np.arange(nj)[None, :, None] - canal_ji[:, 0][:, None, None]) * spacing
    band = ribs & (np.abs(lateral) >= BAND_MM[0]) & (np.abs(lateral) <= BAND_MM[1]) \
        & (np.abs(ap) <= BAND_AP_MM)
    dist, nearest = ndimage.distance_transform_edt(~spine, sampling=spacing,
                                                   return_indices=True)
    pieces, _ = ndimage.label(band, structure=np.ones((3, 3, 3), dtype=bool))
    heads = []
    for idx, sl in enumerate(ndimage.find_objects(pieces), start=1):
        if sl is None:
            continue
        kk, jj, ii = (a + s.start for a, s in zip(np.nonzero(pieces[sl] == idx), sl,
                                                  strict=True))
        if kk.size * spacing**3 < MIN_PIECE_MM3:
            continue
        off = (ii - canal_ji[kk, 1]) * spacing
        medial = int(np.argmin(np.abs(off)))
        k, j, i = int(kk[medial]), int(jj[medial]), int(ii[medial])
        if dist[k, j, i] > CONTACT_MM:
            continue
        owner = int(vertebra_map[nearest[0][k, j, i], nearest[1][k, j, i], nearest[2][k, j, i]])
        heads.append((float(k), float(off[medial]), owner))
    return heads, True


def evidence_by_level(heads: list[tuple[float, float, int]],
                      intervals: dict[int, tuple[float, float]],
                      ) -> dict[int, RibEvidence]:
    """Rib heads per vertebra label. ``intervals``: label -> (lower disc, upper disc) heights in
    the grid's k (mm-free: same units as the heads' k), with HEAD_ABOVE_DISC_MM already added
    to the upper bound by the caller."""
    counts = {label: [0, 0, 0] for label in intervals}
    for k, off, owner in heads:
        inside = [lb for lb, (lo, hi) in intervals.items() if lo < k <= hi]
        label = min(inside, key=lambda lb: intervals[lb][0]) if inside else owner
        if label in counts:
            counts[label][0 if off > 0 else 1] += 1
            if owner in intervals and intervals[owner][0] > intervals[label][0]:
                counts[label][2] += 1
    return {label: RibEvidence(*c) for label, c in counts.items()}
