"""Per-vertebra measurements: centroid, trabecular ROI with HU statistics, body heights.

:func:`measure_vertebra` combines the parts, which live in modules named for what they do:
:mod:`.measure_params` (measurement geometry), :mod:`.body_frame` (mask helpers and the body's
SI/AP/LR frame), :mod:`.body_heights` (heights on the mid-sagittal plane; reused by MR) and
:mod:`.trabecular_roi` (trabecular ROI, HU statistics). Every name callers import from this
module stays importable here.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from osteo_node.pipeline.results import Heights, TrabecularHU
from osteo_node.pipeline.stages.body_frame import (
    ANTERIOR,
    MAX_PCA_TILT_COS,
    SUPERIOR,
    BodyFrame,
    Vec,
    body_frame,
    centroid_mm,
    mask_points_mm,
    touches_border,
)
from osteo_node.pipeline.stages.body_heights import (
    MAX_ENDPLATE_TILT_COS,
    TILT_TOLERANCE,
    HeightMeasurement,
    measure_heights,
)
from osteo_node.pipeline.stages.measure_params import MeasureParams
from osteo_node.pipeline.stages.roi_outline import roi_outlines
from osteo_node.pipeline.stages.trabecular_roi import (
    eroded_mean_hu,
    hu_stats,
    roi_values,
    trabecular_roi,
)
from osteo_node.pipeline.types import Geometry

__all__ = [
    "ANTERIOR",
    "MAX_ENDPLATE_TILT_COS",
    "MAX_PCA_TILT_COS",
    "SUPERIOR",
    "TILT_TOLERANCE",
    "BodyFrame",
    "HeightMeasurement",
    "Heights",
    "MeasureParams",
    "TrabecularHU",
    "Vec",
    "VertebraMeasurement",
    "body_frame",
    "centroid_mm",
    "eroded_mean_hu",
    "hu_stats",
    "mask_points_mm",
    "measure_heights",
    "measure_vertebra",
    "roi_values",
    "touches_border",
    "trabecular_roi",
]


@dataclass(frozen=True)
class VertebraMeasurement:
    centroid_mm: tuple[float, float, float]
    trabecular: TrabecularHU | None
    heights: HeightMeasurement | None
    notes: tuple[str, ...] = field(default_factory=tuple)
    truncated: bool = False  # the vertebra touches the edge of the scanned volume


def _canal_hint(body_c: Vec, centroid: Vec) -> Vec | None:
    """Vertebra centroid -> body centroid as the AP direction, when plausible."""
    ap_hint = body_c - centroid
    if np.linalg.norm(ap_hint) < 2.0 or ap_hint @ ANTERIOR <= 0:
        return None  # body mask == vertebra mask, or implausible: fall back to PCA/patient axes
    return ap_hint


def _trabecular(
    image: NDArray[Any], geometry: Geometry, body_mask: NDArray[Any], frame: BodyFrame,
    params: MeasureParams,
) -> tuple[TrabecularHU | None, list[str]]:
    """HU statistics of the trabecular ROI and the notes about how it was drawn."""
    roi, offset, margin = trabecular_roi(body_mask, geometry, frame, params)
    trab = hu_stats(roi_values(image, roi, offset), float(np.prod(geometry.spacing)))
    if trab is None:
        return None, ["trabecular ROI empty (body too small at this resolution)"]
    axial, sagittal = roi_outlines(roi, offset, geometry)
    trab = replace(trab, outline=axial, sagittal_outline=sagittal)
    if margin < params.roi_margin_mm:
        return trab, [f"small body: ROI margin relaxed to {margin:g} mm"]
    return trab, []


def measure_vertebra(
    image: NDArray[Any] | None,
    geometry: Geometry,
    vertebra_mask: NDArray[Any],
    body_mask: NDArray[Any] | None,
    *,
    si_hint: Vec | None = None,
    params: MeasureParams | None = None,
    height_stability: bool = True,
) -> VertebraMeasurement:
    """Centroid (whole vertebra), trabecular HU (when ``image`` given) and heights of one level
    (``height_stability=False``: without the stability check, see ``measure_heights``)."""
    params = params or MeasureParams()
    centroid = centroid_mm(vertebra_mask, geometry)
    cut = touches_border(vertebra_mask)
    if body_mask is None or not np.any(body_mask):
        return VertebraMeasurement(
            tuple(float(c) for c in centroid), None, None,  # type: ignore[arg-type]
            ("no vertebral body mask: density and heights not measured",), truncated=cut,
        )
    ap_hint = _canal_hint(centroid_mm(body_mask, geometry), centroid)
    hm = measure_heights(body_mask, geometry, si_hint, ap_hint, params,
                         stability=height_stability)
    notes = list(hm.notes)
    trab = None
    if image is not None:
        trab, roi_notes = _trabecular(image, geometry, body_mask, hm.frame, params)
        notes.extend(roi_notes)
    return VertebraMeasurement(
        tuple(float(c) for c in centroid), trab, hm, tuple(notes),  # type: ignore[arg-type]
        truncated=hm.truncated,  # the body decides (posterior elements may be cut harmlessly)
    )
