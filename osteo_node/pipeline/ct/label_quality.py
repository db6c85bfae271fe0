"""Plausibility of the segmented vertebrae: labels without cortical bone, too small, or far
lateral of the trunk are removed before measuring (:func:`drop_implausible`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from osteo_node.pipeline.types import LabelVolume, Volume

OUTLINE_HU = -400.0  # patient outline: voxels above this (air is about -1000 HU)


@dataclass(frozen=True)
class QualityRules:
    min_vertebra_p95_hu: float
    min_vertebra_volume_ml: float
    max_lateral_offset_mm: float
    min_body_probability: float = 0.0
    max_height_instability: float = float("inf")
    min_body_fill: float = 0.0
    max_body_height_mm: float = float("inf")

    @classmethod
    def default(cls) -> QualityRules:
        from osteo_node.clinical_data import load

        q = load("ct_screening")["quality"]
        return cls(float(q["min_vertebra_p95_hu"]["value"]),
                   float(q["min_vertebra_volume_ml"]["value"]),
                   float(q["max_lateral_offset_mm"]["value"]),
                   float(q["min_body_probability"]["value"]),
                   float(q["max_height_instability"]["value"]),
                   float(q["min_body_fill"]["value"]),
                   float(q["max_body_height_mm"]["value"]))


def lateral_offset_mm(volume: Volume, centroid_kji: NDArray[np.float64]) -> float | None:
    """Left-right distance (mm) of a point from the centre of the patient outline in its slice."""
    m = volume.geometry.matrix
    if abs(m[2, 2]) < 0.9:  # only for axial stacks
        return None
    k = int(np.clip(round(float(centroid_kji[0])), 0, volume.array.shape[0] - 1))
    body = volume.array[k] > OUTLINE_HU
    lab, n = ndimage.label(body)
    if n == 0:
        return None
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    jj, ii = np.nonzero(lab == int(np.argmax(sizes)))
    centre = volume.geometry.index_to_lps((float(ii.mean()), float(jj.mean()), float(k)))
    point = volume.geometry.index_to_lps(centroid_kji[::-1])
    return abs(float(point[0] - centre[0]))


def drop_implausible(volume: Volume, labels: LabelVolume, rules: QualityRules) -> list[str]:
    """Remove labelled 'vertebrae' that hold no cortical bone or are too small; say which."""
    arr = labels.array
    if not labels.levels or not np.issubdtype(arr.dtype, np.integer):
        return []
    voxel_ml = float(np.prod(volume.geometry.spacing)) / 1000.0
    objects = ndimage.find_objects(arr, max_label=int(max(labels.levels.values())))
    out: list[str] = []
    for level, value in list(labels.levels.items()):
        box = objects[value - 1] if value - 1 < len(objects) else None
        if box is None:
            del labels.levels[level]
            continue
        mask = arr[box] == value
        hu = volume.array[box][mask]
        volume_ml = mask.sum() * voxel_ml
        p95 = float(np.percentile(hu, 95)) if volume.modality == "CT" else float("inf")
        why = None
        if volume_ml < rules.min_vertebra_volume_ml:
            why = (f"{volume_ml:.1f} ml, smaller than any vertebra "
                   f"(< {rules.min_vertebra_volume_ml:g} ml)")
        elif p95 < rules.min_vertebra_p95_hu:
            why = (f"95th percentile {p95:.0f} HU < {rules.min_vertebra_p95_hu:g} HU: "
                   "no cortical bone")
        else:
            start = np.array([s.start for s in box], dtype=np.float64)
            offset = lateral_offset_mm(volume, np.argwhere(mask).mean(axis=0) + start)
            if offset is not None and offset > rules.max_lateral_offset_mm:
                why = f"{offset:.0f} mm lateral of the trunk centre: not the spine"
        if why is not None:
            arr[box][mask] = 0
            del labels.levels[level]
            labels.confidence.pop(level, None)
            out.append(f"segmented {level} rejected as implausible ({why})")
    return out
