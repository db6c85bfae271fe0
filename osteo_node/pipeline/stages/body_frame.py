"""Mask geometry helpers and the anatomical frame (SI / AP / LR axes) of a vertebral body.

Body frame: the superior-inferior (SI) axis comes from the local spine direction (caller's hint,
e.g. the line through the neighbouring body centroids) or, without a hint, from the principal
axis of the body closest to the patient's feet-head axis; the anterior-posterior (AP) axis from
the direction vertebra centroid -> body centroid (the spinal canal and posterior elements lie
behind the body) or, without it, the principal axis closest to the patient's anterior direction;
both are orthogonalised. The mid-sagittal plane is the SI/AP plane through the body centroid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from osteo_node.pipeline.types import Geometry

Vec = NDArray[np.float64]
SUPERIOR: Vec = np.array([0.0, 0.0, 1.0])  # LPS
ANTERIOR: Vec = np.array([0.0, -1.0, 0.0])  # LPS
MAX_PCA_TILT_COS = float(np.cos(np.radians(25.0)))  # trust a body's own PCA axis up to 25 deg


@dataclass(frozen=True)
class BodyFrame:
    centre: Vec  # LPS mm (body centroid)
    si: Vec  # unit, towards superior
    ap: Vec  # unit, towards anterior
    lr: Vec  # unit, si x ap


def crop_mask(mask: NDArray[Any], pad: int = 2) -> tuple[NDArray[np.bool_], NDArray[np.int64]]:
    """Bounding box of the mask with ``pad`` background voxels; returns the crop and its offset."""
    idx = np.argwhere(mask)
    if idx.size == 0:
        raise ValueError("empty mask")
    lo = idx.min(axis=0)
    hi = idx.max(axis=0) + 1
    crop = np.zeros(tuple(int(v) for v in (hi - lo + 2 * pad)), dtype=bool)
    crop[pad:-pad, pad:-pad, pad:-pad] = mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    return crop, lo - pad


def mask_points_mm(mask: NDArray[Any], geometry: Geometry) -> Vec:
    """LPS coordinates (N, 3) of the voxels of a [k, j, i] mask."""
    kji = np.argwhere(mask)
    return geometry.index_to_lps(kji[:, ::-1].astype(np.float64))


def centroid_mm(mask: NDArray[Any], geometry: Geometry) -> Vec:
    kji = np.argwhere(mask).mean(axis=0)
    return geometry.index_to_lps(kji[::-1])


def touches_border(mask: NDArray[Any]) -> bool:
    return bool(
        mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any()
        or mask[:, :, 0].any() or mask[:, :, -1].any()
    )


def unit(v: Vec) -> Vec:
    return v / float(np.linalg.norm(v))


def _closest_axis(axes: Vec, target: Vec) -> Vec:
    """Column of ``axes`` most parallel to ``target``, signed to point the same way."""
    dots = axes.T @ target
    n = int(np.argmax(np.abs(dots)))
    return axes[:, n] * (1.0 if dots[n] >= 0 else -1.0)


def _si_axis(axes: Vec, si_hint: Vec | None) -> Vec:
    """The hint pointed superior, else the body's thinnest PCA axis when plausibly feet-head."""
    if si_hint is not None and np.linalg.norm(si_hint) > 0:
        si = unit(np.asarray(si_hint, dtype=np.float64))
        return -si if si @ SUPERIOR < 0 else si
    # smallest-variance axis (bodies are flatter than wide or deep) when it is plausibly
    # the feet-head axis, else the patient's feet-head axis
    thinnest = axes[:, 0] * (1.0 if axes[2, 0] >= 0 else -1.0)
    return unit(thinnest) if thinnest @ SUPERIOR >= MAX_PCA_TILT_COS else SUPERIOR.copy()


def _ap_axis(axes: Vec, si: Vec, ap_hint: Vec | None) -> Vec:
    """The hint (or the PCA axis closest to anterior) orthogonalised against ``si``."""
    if ap_hint is not None and np.linalg.norm(ap_hint) > 0:
        ap = np.asarray(ap_hint, dtype=np.float64)
    else:
        ap = _closest_axis(axes, ANTERIOR)
    ap = ap - (ap @ si) * si
    if np.linalg.norm(ap) < 1e-6:
        ap = ANTERIOR - (ANTERIOR @ si) * si
    ap = unit(ap)
    if ap @ ANTERIOR < 0 and ap_hint is None:
        ap = -ap
    return ap


def body_frame(
    points: Vec, si_hint: Vec | None = None, ap_hint: Vec | None = None
) -> BodyFrame:
    """Body axes from its voxel points (LPS mm) and optional spine / canal direction hints."""
    centre = points.mean(axis=0)
    cov = np.cov((points - centre).T)
    _, axes = np.linalg.eigh(cov)
    si = _si_axis(axes, si_hint)
    ap = _ap_axis(axes, si, ap_hint)
    return BodyFrame(centre=centre, si=si, ap=ap, lr=np.cross(si, ap))
