"""Per-body heights for MR through the shared CT code path (``stages.measure.measure_heights``).

Each body is cropped from the label map (zero margin added so the measure code sees a closed
mask), the local spine direction is the line through the neighbouring body centroids, and the
body counts as truncated only when it touches the field of view cranio-caudally or
antero-posteriorly (a sagittal series often ends close to the bodies left and right, which does
not affect the mid-sagittal heights; that is reported as a note).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from osteo_node.pipeline.mr.orient import CanonicalView
from osteo_node.pipeline.stages.measure import HeightMeasurement, MeasureParams, measure_heights
from osteo_node.pipeline.types import Geometry

PAD = 2


@dataclass(frozen=True)
class BodyHeights:
    value: int
    centroid_mm: tuple[float, float, float]
    measurement: HeightMeasurement
    truncated: bool
    notes: tuple[str, ...]


def _padded_crop(
    labels: NDArray[np.integer], value: int, sl: tuple[slice, ...], geometry: Geometry
) -> tuple[NDArray[np.bool_], Geometry]:
    crop = np.pad(np.asarray(labels[sl] == value), PAD)
    start = np.array([s.start for s in sl], dtype=np.float64) - PAD  # k, j, i
    origin = geometry.index_to_lps(start[::-1])
    return crop, Geometry(tuple(float(v) for v in origin), geometry.spacing, geometry.direction)  # type: ignore[arg-type]


def measure_bodies(
    labels: NDArray[np.integer],
    values: Sequence[int],
    geometry: Geometry,
    view: CanonicalView,
    params: MeasureParams | None = None,
) -> list[BodyHeights]:
    """Heights of the bodies ``values`` (ordered head to feet) of a source-grid label map."""
    arr = np.asarray(labels).astype(np.int32, copy=False)
    objects = ndimage.find_objects(arr, max_label=int(max(values)) if values else 0)
    centroids: list[NDArray[np.float64]] = []
    boxes: list[tuple[slice, ...]] = []
    for v in values:
        sl = objects[v - 1] if v - 1 < len(objects) else None
        if sl is None:
            raise ValueError(f"label value {v} not present")
        boxes.append(sl)
        kji = np.argwhere(arr[sl] == v).mean(axis=0) + [s.start for s in sl]
        centroids.append(geometry.index_to_lps(kji[::-1]))
    si_axis, ap_axis, lr_axis = view.perm[1], view.perm[2], view.perm[0]
    out: list[BodyHeights] = []
    for n, (v, sl) in enumerate(zip(values, boxes, strict=True)):
        up = centroids[n - 1] if n > 0 else centroids[n]
        down = centroids[n + 1] if n + 1 < len(centroids) else centroids[n]
        hint = up - down if len(centroids) > 1 else None
        crop, geom = _padded_crop(arr, v, sl, geometry)
        m = measure_heights(crop, geom, hint, None, params)

        def touches(axis: int, sl: tuple[slice, ...] = sl) -> bool:
            return sl[axis].start == 0 or sl[axis].stop == arr.shape[axis]

        truncated = touches(si_axis) or touches(ap_axis)
        notes: list[str] = []
        if truncated:
            notes.append("body cut by the field of view: heights and grade not assessed")
        elif touches(lr_axis):
            notes.append("body reaches the outermost sagittal slice (lateral part not imaged)")
        c = centroids[n]
        centre = (float(c[0]), float(c[1]), float(c[2]))
        out.append(BodyHeights(v, centre, m, truncated, tuple(notes)))
    return out
