"""Reference label maps of labelled real CT cases, read onto the grid of the volume under test.

Reference label files (NIfTI) are resampled (nearest neighbour) onto the analysed volume's grid,
so DICOM and NIfTI inputs are compared in the same voxel space. Two numberings are understood:
- ``verse``: 1-7 C1-C7, 8-19 T1-T12, 20-25 L1-L6, 26 sacrum, 28 T13;
- ``totalseg``: TotalSegmentator v2 "total" task, 25 sacrum, 26 S1, 27 L5 ... 31 L1, 32 T12 ...
  43 T1, 44 C7 ... 50 C1;
- ``totalseg_dataset``: the merged label maps of ``ct/totalseg_dataset``: 1-7 C1-C7, 8-19
  T1-T12, 20-24 L1-L5, 25 S1.
Used by the analyser evaluation (``evaluation.py``), the training data preparation
(``ai_models/ct_sagittal/prepare_data.py``) and the tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from osteo_node.pipeline.ct.level_names import VERSE_VALUES
from osteo_node.pipeline.sitk_io import resample_labels
from osteo_node.pipeline.types import Geometry, LabelVolume, Volume

# Reference label values -> level names: the node's own VerSe table, plus T13 (28), which
# VerSe-numbered references may contain and the node never produces.
VERSE_NAMES: dict[int, str] = {v: name for name, v in VERSE_VALUES.items()} | {28: "T13"}


def totalseg_to_verse(value: int) -> int | None:
    if 27 <= value <= 50:
        return 51 - value
    if value in (25, 26):
        return 26
    return None


def dataset_to_verse(value: int) -> int | None:
    if 1 <= value <= 24:
        return value
    return 26 if value == 25 else None


def to_verse(value: int, numbering: str) -> int | None:
    """A reference value in ``numbering`` as a VerSe value (None: not a vertebra)."""
    if numbering == "verse":
        return value
    if numbering == "totalseg_dataset":
        return dataset_to_verse(value)
    if numbering == "totalseg":
        return totalseg_to_verse(value)
    raise ValueError(f"unknown reference numbering {numbering!r}")


def resample_to_grid(
    path: Path, geometry: Geometry, shape: tuple[int, ...]
) -> NDArray[np.uint8]:
    """Nearest-neighbour resampling of a label NIfTI (values < 256) onto a [k, j, i] grid."""
    import SimpleITK as sitk

    labels = resample_labels(sitk.ReadImage(str(path)), geometry, shape)
    return labels.astype(np.uint8, copy=False)


def reference_on(volume: Volume, path: Path) -> NDArray[np.uint8]:
    """The label file at ``path`` on ``volume``'s grid (raw reference values)."""
    return resample_to_grid(path, volume.geometry, volume.array.shape)


def reference_label_volume(
    path: Path, numbering: str, geometry: Geometry, shape: tuple[int, ...]
) -> LabelVolume:
    """The reference vertebrae as a LabelVolume in the node's VerSe numbering."""
    raw = resample_to_grid(path, geometry, shape)
    lut = np.zeros(256, dtype=np.uint8)
    levels: dict[str, int] = {}
    for value in np.flatnonzero(np.bincount(raw.ravel(), minlength=256)):
        v = int(value)
        verse = to_verse(v, numbering)
        if v == 0 or verse is None or verse not in VERSE_NAMES:
            continue
        lut[v] = verse
        levels[VERSE_NAMES[verse]] = verse
    out = lut[raw]
    del raw
    return LabelVolume(out, geometry, levels, {k: 1.0 for k in levels}, ["reference labels"])


def centroid_lps(mask: NDArray[Any], geometry: Geometry) -> NDArray[np.float64] | None:
    """LPS centroid (mm) of a [k, j, i] mask; None when the mask is empty."""
    idx = np.argwhere(mask)
    if idx.size == 0:
        return None
    return geometry.index_to_lps(idx.mean(axis=0)[::-1])
