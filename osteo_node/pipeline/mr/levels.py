"""Level names for MR bodies ordered head to feet.

The network segments vertebral bodies but never the sacrum (it was trained with the sacrum as
background). The lowest body is therefore taken as L5 when the lumbosacral junction is in view:
the field of view continues at least ``min_caudal_margin_mm`` below the lowest body and little
body-like (under a quarter of a body volume, and nothing at the lower edge of the field of view)
was segmented there. Levels are then counted upwards
(L5, L4, ... L1, T12 ...). Otherwise the bodies get relative labels V1..Vn (head to feet) and a
note says why. Lumbosacral transitional anatomy (six lumbar or a sacralised L5) cannot be
recognised this way and would shift all names by one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from osteo_node.pipeline.results import LEVELS


@dataclass(frozen=True)
class LevelParams:
    min_caudal_margin_mm: float = 15.0
    max_fragment_below_fraction: float = 0.25  # of the median body volume
    bottom_edge_mm: float = 2.0  # body voxels this close to the lower FOV edge: a cut body
    anchored_confidence: float = 0.8  # L5 anchor; decreases by step per level upwards
    confidence_step: float = 0.03
    relative_confidence: float = 0.0


@dataclass
class LevelAssignment:
    names: list[str]  # one per body, head to feet
    confidence: list[float]
    anchored: bool
    notes: list[str] = field(default_factory=list)


def relative_names(n: int) -> list[str]:
    return [f"V{i}" for i in range(1, n + 1)]


def assign_levels(
    labels: NDArray[np.int32],
    body_mask: NDArray[np.bool_],
    sp_si: float,
    params: LevelParams | None = None,
) -> LevelAssignment:
    """Names for bodies 1..n of a canonical ``[LR, SI, AP]`` instance map (1 = most cranial)."""
    params = params or LevelParams()
    n = int(labels.max())
    if n == 0:
        return LevelAssignment([], [], False, ["no vertebral body found"])
    rows = np.flatnonzero((labels == n).any(axis=(0, 2)))
    bottom = int(rows[-1])
    margin_mm = (labels.shape[1] - 1 - bottom) * sp_si
    below = body_mask[:, bottom + 1 :, :] & (labels[:, bottom + 1 :, :] == 0)
    volumes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    l5 = LEVELS.index("L5")
    reasons = []
    if margin_mm < params.min_caudal_margin_mm:
        reasons.append(
            f"field of view ends {margin_mm:.0f} mm below the lowest body "
            f"(< {params.min_caudal_margin_mm:.0f} mm): lumbosacral junction not in view"
        )
    edge_rows = max(1, int(np.ceil(params.bottom_edge_mm / sp_si)))
    if body_mask[:, -edge_rows:, :].any():
        reasons.append("a body is cut by the lower edge of the field of view")
    elif int(below.sum()) > params.max_fragment_below_fraction * float(np.median(volumes)):
        reasons.append("body-like fragments below the lowest body: sacrum not identified")
    if n > l5:
        reasons.append(f"{n} bodies are more than the {l5} bodies C2..L5")
    if reasons:
        return LevelAssignment(
            relative_names(n),
            [params.relative_confidence] * n,
            False,
            ["levels not identified, relative labels V1..Vn head to feet: " + "; ".join(reasons)],
        )
    names = [LEVELS[l5 - (n - 1 - i)] for i in range(n)]
    conf = [
        round(max(0.1, params.anchored_confidence - params.confidence_step * (n - 1 - i)), 3)
        for i in range(n)
    ]
    note = (
        "levels counted upwards from the lowest body, taken as L5 above the (unsegmented) sacrum; "
        "transitional lumbosacral anatomy would shift them"
    )
    return LevelAssignment(names, conf, True, [note])
