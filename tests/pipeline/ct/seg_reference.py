"""Per-level metrics the CT-model tests report against the real reference labels.

The reference labels themselves (numbering tables, resampling onto the grid of the Volume under
test, per-level masks, centroids) come from ``osteo_node.pipeline.ct.references``; metrics are
computed on the input grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from osteo_node.pipeline.ct.references import centroid_lps
from osteo_node.pipeline.metrics import dice
from osteo_node.pipeline.types import LabelVolume, Volume


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


def _centroid(volume: Volume, mask: NDArray[np.bool_]) -> NDArray[np.float64]:
    c = centroid_lps(mask, volume.geometry)
    assert c is not None, "centroid of an empty mask"
    return c


def level_metrics(
    volume: Volume,
    labels: LabelVolume,
    *,
    bodies: LabelVolume,
    ref_vert: dict[str, NDArray[np.bool_]],
    ref_body: dict[str, NDArray[np.bool_]],
    min_ref_voxels: int = 1,
) -> list[LevelMetrics]:
    pred_cent = {lv: _centroid(volume, labels.array == v) for lv, v in labels.levels.items()
                 if (labels.array == v).any()}
    out = []
    for level, ref in ref_vert.items():
        if ref.sum() < min_ref_voxels:
            continue
        rc = _centroid(volume, ref)
        nearest = min(pred_cent, key=lambda k: float(np.linalg.norm(pred_cent[k] - rc)),
                      default=None)
        if level not in labels.levels:
            out.append(LevelMetrics(level, False, None, None, None, nearest))
            continue
        pm = labels.array == labels.levels[level]
        err = float(np.linalg.norm(pred_cent[level] - rc)) if level in pred_cent else None
        bd = None
        if level in ref_body and level in bodies.levels:
            bd = dice(bodies.array == bodies.levels[level], ref_body[level], 1.0)
        out.append(LevelMetrics(level, True, err, dice(pm, ref, 1.0), bd, nearest))
    return out
