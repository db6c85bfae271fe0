"""Reference labels and metrics for evaluating the CT analyser on labelled real cases.

Reference label files (NIfTI) are resampled (nearest neighbour) onto the analysed volume's grid,
so DICOM and NIfTI inputs are compared in the same voxel space. Two numberings are understood:
- ``verse``: 1-7 C1-C7, 8-19 T1-T12, 20-25 L1-L6, 26 sacrum, 28 T13;
- ``totalseg``: TotalSegmentator v2 "total" task, 25 sacrum, 26 S1, 27 L5 ... 31 L1, 32 T12 ...
  43 T1, 44 C7 ... 50 C1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from osteo_node.pipeline.ct.analyser import Segmentation, SegmentFn
from osteo_node.pipeline.results import ModelInfo
from osteo_node.pipeline.types import Geometry, LabelVolume, Volume

VERSE_NAMES: dict[int, str] = {
    **{v: f"C{v}" for v in range(1, 8)},
    **{v: f"T{v - 7}" for v in range(8, 20)},
    **{v: f"L{v - 19}" for v in range(20, 26)},
    26: "S1",
    28: "T13",
}


def totalseg_to_verse(value: int) -> int | None:
    if 27 <= value <= 50:
        return 51 - value
    if value in (25, 26):
        return 26
    return None


def resample_to_grid(path: Path, geometry: Geometry, shape: tuple[int, ...]) -> NDArray[np.int32]:
    """Nearest-neighbour resampling of a label NIfTI onto a [k, j, i] grid."""
    import SimpleITK as sitk

    moving = sitk.ReadImage(str(path))
    ref = sitk.Image(int(shape[2]), int(shape[1]), int(shape[0]), sitk.sitkUInt8)
    ref.SetOrigin(tuple(geometry.origin))
    ref.SetSpacing(tuple(geometry.spacing))
    ref.SetDirection(tuple(geometry.direction))
    out = sitk.Resample(moving, ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0,
                        sitk.sitkInt32)
    return sitk.GetArrayFromImage(out)


def reference_label_volume(
    path: Path, numbering: str, geometry: Geometry, shape: tuple[int, ...]
) -> LabelVolume:
    raw = resample_to_grid(path, geometry, shape)
    out = np.zeros(shape, dtype=np.uint8)
    levels: dict[str, int] = {}
    for value in np.unique(raw):
        v = int(value)
        verse = v if numbering == "verse" else totalseg_to_verse(v)
        if v == 0 or verse is None or verse not in VERSE_NAMES:
            continue
        out[raw == v] = verse
        levels[VERSE_NAMES[verse]] = verse
    return LabelVolume(out, geometry, levels, {k: 1.0 for k in levels}, ["reference labels"])


@dataclass(frozen=True)
class ReferenceSpec:
    """Where a case's reference labels are and how to read them."""

    vertebrae: Path
    numbering: str  # verse | totalseg
    bodies: Path | None = None
    body_values: tuple[int, ...] = (1,)


def reference_bodies(spec: ReferenceSpec, geometry: Geometry, shape: tuple[int, ...]
                     ) -> NDArray[np.bool_] | None:
    if spec.bodies is None:
        return None
    return np.isin(resample_to_grid(spec.bodies, geometry, shape), spec.body_values)


def reference_segment_fn(spec: ReferenceSpec) -> SegmentFn:
    """A segment function returning the reference labels (for measurement tests / evaluation)."""

    def segment(volume: Volume) -> Segmentation:
        shape = volume.array.shape
        labels = reference_label_volume(spec.vertebrae, spec.numbering, volume.geometry, shape)
        bodies = reference_bodies(spec, volume.geometry, shape)
        return Segmentation(labels, bodies, ModelInfo("reference-labels", "n/a", "n/a", "n/a"))

    return segment


def dice(a: NDArray[Any], b: NDArray[Any]) -> float | None:
    sa, sb = int(np.count_nonzero(a)), int(np.count_nonzero(b))
    if sa + sb == 0:
        return None
    return 2.0 * int(np.count_nonzero(np.logical_and(a, b))) / (sa + sb)


def centroid_lps(mask: NDArray[Any], geometry: Geometry) -> NDArray[np.float64] | None:
    idx = np.argwhere(mask)
    if idx.size == 0:
        return None
    return geometry.index_to_lps(idx.mean(axis=0)[::-1])


def nearest_level(point: NDArray[np.float64], refs: dict[str, NDArray[np.float64]]
                  ) -> tuple[str | None, float]:
    best, dist = None, float("inf")
    for level, c in refs.items():
        d = float(np.linalg.norm(point - c))
        if d < dist:
            best, dist = level, d
    return best, dist


def levels_in(names: Sequence[str]) -> list[str]:
    return [n for n in names if n in VERSE_NAMES.values()]
