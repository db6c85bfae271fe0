"""The CT analyser's segment stage: vertebrae along the spinal column, as a ``Segmentation``.

:func:`segment_for_analysis` loads the shipped sagittal model once per process (checksum
verified, CUDA execution provider when onnxruntime-gpu offers it, else CPU) and runs
:func:`osteo_node.pipeline.ct.column_segmentation.segment_column`; :func:`segment_with` does
the same with a given model (the leave-one-case-out evaluation passes each fold's model).
"""

from __future__ import annotations

from collections.abc import Callable

from osteo_node.models import ModelError, OnnxModel
from osteo_node.pipeline.ct.column_segmentation import segment_column
from osteo_node.pipeline.ct.sagittal_net import default_model
from osteo_node.pipeline.ct.stage_types import NotAnalysable, Segmentation
from osteo_node.pipeline.types import Volume


def segment_with(model: OnnxModel) -> Callable[[Volume], Segmentation]:
    """A segment function running ``model``."""

    def segment(volume: Volume) -> Segmentation:
        seg = segment_column(volume, model)
        return Segmentation(labels=seg.labels, bodies=seg.bodies, model=seg.model,
                            heights_unmeasurable=seg.cut_endplates,
                            body_confidence=seg.body_confidence, partial=seg.partial,
                            fine_bodies=seg.fine_bodies, body_span_mm=seg.body_span_mm)

    return segment


def segment_for_analysis(volume: Volume) -> Segmentation:
    """Labels + bodies on the input grid with ModelInfo, from the shipped model.

    Raises ``NotAnalysable`` when the model cannot be loaded."""
    try:
        model = default_model()
    except ModelError as exc:
        raise NotAnalysable(f"vertebra segmentation model not available: {exc}") from exc
    return segment_with(model)(volume)
