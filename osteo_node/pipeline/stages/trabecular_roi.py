"""Trabecular region of interest inside a vertebral body and its HU statistics.

The ROI is the central core of the body mask (away from cortex and endplates) without the
posterior-central entry of the basivertebral vein; :func:`hu_stats` summarises the image values
inside it. :func:`eroded_mean_hu` is the simpler reference ROI used in evaluation.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from osteo_node.pipeline.results import TrabecularHU
from osteo_node.pipeline.stages.body_frame import BodyFrame, crop_mask
from osteo_node.pipeline.stages.measure_params import MeasureParams
from osteo_node.pipeline.types import Geometry


def _surface_depth_mm(crop: NDArray[np.bool_], geometry: Geometry) -> NDArray[np.float64]:
    """Distance (mm) of every crop voxel from the nearest background voxel."""
    sp = geometry.spacing
    return np.asarray(ndimage.distance_transform_edt(crop, sampling=(sp[2], sp[1], sp[0])))


def _outside_vein(
    crop: NDArray[np.bool_], offset: NDArray[np.int64], geometry: Geometry, frame: BodyFrame,
    params: MeasureParams,
) -> NDArray[np.bool_]:
    """False where the basivertebral vein enters (posterior, near the mid-sagittal plane)."""
    keep = np.ones_like(crop)
    kji = np.argwhere(crop)
    pts = geometry.index_to_lps((kji + offset)[:, ::-1].astype(np.float64)) - frame.centre
    u, w = pts @ frame.ap, pts @ frame.lr
    u_frac = (u - u.min()) / max(float(u.max() - u.min()), 1e-6)
    half_w = max(float(np.abs(w).max()), 1e-6)
    vein = (u_frac < params.vein_posterior_fraction) & (
        np.abs(w) < params.vein_half_width_fraction * half_w
    )
    keep[tuple(kji[vein].T)] = False
    return keep


def trabecular_roi(
    body_mask: NDArray[Any],
    geometry: Geometry,
    frame: BodyFrame,
    params: MeasureParams | None = None,
    exclude_vein: bool = True,
) -> tuple[NDArray[np.bool_], NDArray[np.int64], float]:
    """Trabecular ROI inside a body mask, in the body's bounding-box crop.

    The ROI keeps voxels at least ``roi_margin_mm`` from the body surface, and at least
    ``roi_depth_fraction`` of the deepest voxel's depth (the central core: a body mask that is a
    voxel too wide on a coarse grid would otherwise put cortex and endplate into the ROI; on
    real held-out bodies this moved the mean by tens of HU), and, with ``exclude_vein``, drops
    the posterior-central part where the basivertebral vein enters. Returns (roi crop mask,
    crop offset [k, j, i], margin used).
    When the ROI would be smaller than ``roi_min_volume_mm3`` the margin is relaxed down to
    ``roi_min_margin_mm``.
    """
    params = params or MeasureParams()
    crop, offset = crop_mask(np.asarray(body_mask, dtype=bool))
    depth = _surface_depth_mm(crop, geometry)
    voxel_mm3 = float(np.prod(geometry.spacing))
    if exclude_vein:
        keep_vein = _outside_vein(crop, offset, geometry, frame, params)
    else:
        keep_vein = np.ones_like(crop)
    margin = max(params.roi_margin_mm, params.roi_depth_fraction * float(depth.max(initial=0.0)))
    while True:
        roi = (depth > margin) & keep_vein
        if roi.sum() * voxel_mm3 >= params.roi_min_volume_mm3 or margin <= params.roi_min_margin_mm:
            return roi, offset, margin
        margin = max(params.roi_min_margin_mm, margin - 0.5)


def hu_stats(values: NDArray[Any], voxel_mm3: float) -> TrabecularHU | None:
    if values.size == 0:
        return None
    return TrabecularHU(
        mean=round(float(values.mean()), 1),
        median=round(float(np.median(values)), 1),
        sd=round(float(values.std()), 1),
        voxels=int(values.size),
        volume_mm3=round(float(values.size * voxel_mm3), 1),
    )


def roi_values(
    image: NDArray[Any], roi: NDArray[np.bool_], offset: NDArray[np.int64]
) -> NDArray[np.float32]:
    kji = np.argwhere(roi) + offset
    return np.asarray(image[kji[:, 0], kji[:, 1], kji[:, 2]], dtype=np.float32)


def eroded_mean_hu(
    image: NDArray[Any], geometry: Geometry, body_mask: NDArray[Any], margin_mm: float
) -> float | None:
    """Mean HU of a body mask eroded by ``margin_mm`` (reference ROI for evaluation)."""
    crop, offset = crop_mask(np.asarray(body_mask, dtype=bool))
    vals = roi_values(image, _surface_depth_mm(crop, geometry) > margin_mm, offset)
    return float(vals.mean()) if vals.size else None
