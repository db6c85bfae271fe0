"""Types the CT analysis stages exchange: the refusal, the segment stage's output, the context.

Re-exported by :mod:`osteo_node.pipeline.ct.analyser` (callers import them from there).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from numpy.typing import NDArray

from osteo_node.pipeline.results import ModelInfo
from osteo_node.pipeline.stages.context import AnalysisContext, NotAnalysable
from osteo_node.pipeline.types import Geometry, LabelVolume, Volume

__all__ = ["AnalysisContext", "FineMask", "NotAnalysable", "SegmentFn", "Segmentation"]


@dataclass(frozen=True)
class FineMask:
    """A vertebral body on a local grid finer than the input's (``[k, j, i]``, its own
    geometry): the heights of thick-slice series are measured on it."""

    mask: NDArray[Any]
    geometry: Geometry


@dataclass
class Segmentation:
    """What the segment stage returns: vertebra labels (VerSe numbering) and body masks.

    ``bodies``: vertebral-body mask on the same grid, either boolean/0-1 (any body; intersected
    with each vertebra's label) or labelled with the same values as ``labels``; None when the
    model gives no bodies (density and heights are then not measured).
    """

    labels: LabelVolume
    bodies: NDArray[Any] | None
    model: ModelInfo | None
    # levels whose body boundary is not a resolved endplate (see levels.VertebraSegmentation)
    heights_unmeasurable: frozenset[str] = frozenset()
    # per level, mean network probability of the body class over its body (model output only)
    body_confidence: Mapping[str, float] = field(default_factory=dict)
    # levels the segmentation found cut by the field of view (partial vertebrae), also when the
    # body mask on the input grid stops short of the edge slice
    partial: frozenset[str] = frozenset()
    # per level, the body on a finer local grid (thick-slice input only; see fine_bodies)
    fine_bodies: Mapping[str, FineMask] = field(default_factory=dict)
    # per level, the distance (mm) between the disc planes below and above its body along the
    # column (bodies between two discs found; model output only): what the body should fill
    body_span_mm: Mapping[str, float] = field(default_factory=dict)


SegmentFn = Callable[[Volume], Segmentation]
