"""Reference labels of the real CT cases and the metrics the CT-model tests report.

Reference numbering: example_ct_vertebrae / dicom_seg_reference use TotalSegmentator v2 "total"
numbering (26 S1, 27 L5, ..., 31 L1, 32 T12, 33 T11); TPTBox and vertebrae_pp_refined use VerSe
numbering (19 T12, 20 L1, ...). Every reference is resampled (nearest) onto the grid of the
Volume under test, so metrics are computed on the input grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from numpy.typing import NDArray

from osteo_node.pipeline import metrics
from osteo_node.pipeline.ct.seg_grid import resample_labels
from osteo_node.pipeline.types import LabelVolume, Volume

TS_TOTAL = {27: "L5", 28: "L4", 29: "L3", 30: "L2", 31: "L1", 32: "T12", 33: "T11", 34: "T10"}


def example_body_reference(
    body: NDArray[np.generic], vert: NDArray[np.generic]
) -> dict[str, NDArray[np.bool_]]:
    """example_ct body reference per level: vertebrae_body == 1 inside each reference vertebra
    (example_ct_vertebrae). vertebrae_pp_refined is a tighter, refined body mask; both are
    reported by the tests and the model card."""
    return {name: np.asarray((body == 1) & (vert == v)) for v, name in TS_TOTAL.items()
            if ((body == 1) & (vert == v)).any()}
VERSE = {19: "T12", 20: "L1", 21: "L2", 22: "L3", 23: "L4", 24: "L5"}


def reference_on(volume: Volume, path: Path) -> NDArray[np.generic]:
    img = sitk.ReadImage(str(path))
    return resample_labels(img, volume.geometry, volume.array.shape)  # type: ignore[arg-type]


def dice(a: NDArray[np.bool_], b: NDArray[np.bool_]) -> float:
    return metrics.dice(a, b, empty=1.0)


def centroid_lps(volume: Volume, mask: NDArray[np.bool_]) -> NDArray[np.float64]:
    kji = np.argwhere(mask).mean(axis=0)
    return volume.geometry.index_to_lps(kji[::-1])


@dataclass
class LevelMetrics:
    level: str
    present: bool
    centroid_error_mm: float | None
    vertebra_dice: float | None
    body_dice: float | None
    nearest_level: str | None  # predicted level whose centroid is nearest the reference one

    def line(self) -> str:
        def f(v: float | None) -> str:
            return "  n/a" if v is None else f"{v:5.2f}"

        return (f"{self.level:>4}: present={self.present!s:5} centroid_err_mm="
                f"{f(self.centroid_error_mm)} vert_dice={f(self.vertebra_dice)} "
                f"body_dice={f(self.body_dice)} nearest_pred={self.nearest_level}")


def level_metrics(
    volume: Volume,
    labels: LabelVolume,
    *,
    bodies: LabelVolume,
    ref_vert: dict[str, NDArray[np.bool_]],
    ref_body: dict[str, NDArray[np.bool_]],
    min_ref_voxels: int = 1,
) -> list[LevelMetrics]:
    pred_cent = {lv: centroid_lps(volume, labels.array == v) for lv, v in labels.levels.items()
                 if (labels.array == v).any()}
    out = []
    for level, ref in ref_vert.items():
        if ref.sum() < min_ref_voxels:
            continue
        rc = centroid_lps(volume, ref)
        nearest = min(pred_cent, key=lambda k: float(np.linalg.norm(pred_cent[k] - rc)),
                      default=None)
        if level not in labels.levels:
            out.append(LevelMetrics(level, False, None, None, None, nearest))
            continue
        pm = labels.array == labels.levels[level]
        err = float(np.linalg.norm(pred_cent[level] - rc)) if level in pred_cent else None
        bd = None
        if level in ref_body and level in bodies.levels:
            bd = dice(bodies.array == bodies.levels[level], ref_body[level])
        out.append(LevelMetrics(level, True, err, dice(pm, ref), bd, nearest))
    return out


def split(ref: NDArray[np.generic], names: dict[int, str]) -> dict[str, NDArray[np.bool_]]:
    return {name: np.asarray(ref == v) for v, name in names.items() if (ref == v).any()}
