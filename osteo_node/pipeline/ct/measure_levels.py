"""The CT measure stage: per labelled vertebra, a crop, its body centroid and the measurements.

:func:`measure_stage` crops around each vertebra (low memory), derives the local spine direction
from the neighbouring body centroids, measures (``stages.measure``) and applies the
segmentation's reservations (partial vertebra, uncertain body outline, unresolved endplate).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from osteo_node.clinical.red_flags import BodyTexture, body_texture
from osteo_node.pipeline.ct.label_quality import QualityRules
from osteo_node.pipeline.ct.stage_types import FineMask, NotAnalysable, Segmentation
from osteo_node.pipeline.results import level_index
from osteo_node.pipeline.stages.measure import (
    Heights,
    MeasureParams,
    VertebraMeasurement,
    measure_heights,
    measure_vertebra,
)
from osteo_node.pipeline.types import Geometry, Volume

UNRESOLVED_ENDPLATE = ("endplate not resolved: the body was separated from its neighbour by a "
                       "cut where the segmentation saw no disc; heights not measured, not graded")
# (worded without "cut by the field of view": that phrase marks the body itself as partial)
NO_COMPLETE_NEIGHBOUR = ("the only complete vertebra in view (its neighbours reach beyond the "
                         "scan or are absent): shape not graded without an adjacent vertebra to "
                         "compare with")


@dataclass
class VertebraRecord:
    level: str
    value: int
    measurement: VertebraMeasurement
    body_centroid: NDArray[np.float64] | None
    texture: BodyTexture | None = None
    body_confidence: float | None = None


def _crop_box(
    sl: tuple[slice, ...], shape: tuple[int, ...], margin: int = 2
) -> tuple[slice, slice, slice]:
    return tuple(  # type: ignore[return-value]
        slice(max(0, s.start - margin), min(n, s.stop + margin))
        for s, n in zip(sl, shape, strict=True)
    )


def crop_geometry(geometry: Geometry, box: tuple[slice, slice, slice]) -> Geometry:
    """Geometry of a [k, j, i] sub-array starting at ``box`` starts."""
    origin = geometry.index_to_lps((box[2].start, box[1].start, box[0].start))
    return Geometry(tuple(float(v) for v in origin), geometry.spacing, geometry.direction)  # type: ignore[arg-type]


def _body_mask(
    bodies: NDArray[Any] | None, vert: NDArray[np.bool_], value: int,
    box: tuple[slice, slice, slice], binary: bool,
) -> NDArray[np.bool_] | None:
    if bodies is None:
        return None
    sub = bodies[box]
    return vert & (sub > 0) if binary else np.asarray(sub == value)


def _si_hints(centroids: Mapping[str, NDArray[np.float64]]) -> dict[str, NDArray[np.float64]]:
    """Local spine direction per level from the neighbouring body centroids."""
    by_index = {level_index(lv): c for lv, c in centroids.items()}
    hints: dict[str, NDArray[np.float64]] = {}
    for lv, c in centroids.items():
        i = level_index(lv)
        up, down = by_index.get(i - 1), by_index.get(i + 1)
        if up is None and down is None:
            continue
        hints[lv] = (up if up is not None else c) - (down if down is not None else c)
    return hints


def unstable_heights_note(instability: float, params: MeasureParams) -> str:
    return (f"body outline irregular: a height changes by {instability:.0%} when the "
            f"measurement plane tilts {params.stability_tilt_deg:g} deg or moves "
            f"{params.stability_shift_mm:g} mm; density and heights not reported, not graded")


def incomplete_body_note(fill: float, min_fill: float) -> str:
    return (f"body outline incomplete: its tallest height fills {fill:.0%} of the space "
            f"between its discs (< {min_fill:.0%}); density and heights not reported, not "
            "graded")


def _tallest(m: VertebraMeasurement) -> float | None:
    if m.heights is None:
        return None
    h = m.heights.heights
    return max((x for x in (h.anterior, h.middle, h.posterior) if x), default=None)


def _fill(m: VertebraMeasurement, span_mm: float | None) -> float | None:
    """The body's tallest height over the distance between its discs (None when either is
    not known, or the body is cut by the scan)."""
    tallest = _tallest(m)
    if tallest is None or m.truncated or not span_mm:
        return None
    return tallest / span_mm


def _fine_heights(m: VertebraMeasurement, fine: FineMask, si_hint: NDArray[np.float64] | None,
                  params: MeasureParams) -> VertebraMeasurement:
    """The heights measured again on the body's fine local mask (thick-slice input), starting
    from the input-grid frame's axes; truncation and notes stay the input grid's."""
    assert m.heights is not None
    hm = measure_heights(fine.mask, fine.geometry, si_hint if si_hint is not None
                         else m.heights.frame.si, m.heights.frame.ap, params)
    if hm.heights.posterior is None:
        return m
    return replace(m, heights=replace(hm, truncated=m.heights.truncated,
                                      notes=m.heights.notes))


def _outline_doubt(m: VertebraMeasurement, span_mm: float | None, quality: QualityRules,
                   params: MeasureParams) -> str | None:
    """Why a measured body outline cannot be trusted (None: it can): a body taller than any
    vertebral body, one filling too little of the space between its discs, or heights that
    change over the perturbed measurement planes."""
    tallest = _tallest(m)
    if tallest is not None and tallest > quality.max_body_height_mm:
        return (f"body outline implausible: {tallest:.0f} mm tall (> "
                f"{quality.max_body_height_mm:g} mm: two bodies in one outline?); density and "
                "heights not reported, not graded")
    fill = _fill(m, span_mm)
    if fill is not None and fill < quality.min_body_fill:
        return incomplete_body_note(fill, quality.min_body_fill)
    instability = 0.0 if m.heights is None else m.heights.instability or 0.0
    if instability > quality.max_height_instability:
        return unstable_heights_note(instability, params)
    return None


def _has_complete_neighbour(level: str, seg: Segmentation) -> bool:
    """Whether a vertebra adjacent to ``level`` is labelled and not cut by the field of view.
    Genant's semi-quantitative reading judges a body's shape with its neighbours in view; a
    scan covering less than three vertebrae (a short slab) gives the segmentation nothing to
    be checked against either (the held-out 40 mm contrast slab: its one complete body
    outlined as a false grade-3 wedge by one model, grade 0 by another)."""
    i = level_index(level)
    return any(abs(level_index(other) - i) == 1 and other not in seg.partial
               for other in seg.labels.levels)


def _judged_outline(m: VertebraMeasurement, level: str, seg: Segmentation,
                    quality: QualityRules | None, params: MeasureParams) -> VertebraMeasurement:
    """The measurement without heights (not graded) where its body outline cannot be trusted:
    an endplate not resolved or no complete neighbour in view (heights only), or
    :func:`_outline_doubt` (heights and the
    trabecular ROI, which comes from the same outline: the density level falls back to the
    next one, as for a fractured L1). A body cut by the scan has no reported heights: not
    judged."""
    if m.heights is None:
        return m
    no_heights = replace(m.heights, heights=Heights(None, None, None))
    if level in seg.heights_unmeasurable:
        return replace(m, heights=no_heights, notes=(*m.notes, UNRESOLVED_ENDPLATE))
    if not _has_complete_neighbour(level, seg):
        return replace(m, heights=no_heights, notes=(*m.notes, NO_COMPLETE_NEIGHBOUR))
    if quality is None or m.truncated:
        return m
    doubt = _outline_doubt(m, seg.body_span_mm.get(level), quality, params)
    if doubt is None:
        return m
    return replace(m, trabecular=None, heights=no_heights, notes=(*m.notes, doubt))


def measure_stage(
    volume: Volume, seg: Segmentation, levels: Sequence[str], params: MeasureParams,
    quality: QualityRules | None = None,
) -> list[VertebraRecord]:
    """Measure every labelled vertebra among ``levels`` (crops around each, low memory).

    ``quality``: a body whose network probability is below ``min_body_probability`` is not
    measured; one whose heights are unstable (``max_height_instability``) or whose tallest
    height fills too little of the space between its discs (``min_body_fill``) is not
    graded."""
    min_body_probability = quality.min_body_probability if quality else 0.0
    lab = seg.labels
    arr = lab.array
    if arr.shape != volume.array.shape:
        raise NotAnalysable(f"label map shape {arr.shape} differs from image {volume.array.shape}")
    value_to_level = {v: k for k, v in lab.levels.items() if k in levels}
    if not value_to_level:
        return []
    max_value = int(max(value_to_level))
    if not np.issubdtype(arr.dtype, np.integer):
        raise NotAnalysable(f"label map has non-integer type {arr.dtype}")
    objects = ndimage.find_objects(arr, max_label=max_value)  # no full-size copy
    binary = seg.bodies is not None and (
        seg.bodies.dtype == bool or int(np.max(seg.bodies)) <= 1
    )
    boxes: dict[str, tuple[slice, slice, slice]] = {}
    body_centroids: dict[str, NDArray[np.float64]] = {}
    for value, level in value_to_level.items():
        sl = objects[value - 1] if value - 1 < len(objects) else None
        if sl is None:
            continue
        box = _crop_box(sl, arr.shape)
        boxes[level] = box
        vert = np.asarray(arr[box] == value)
        body = _body_mask(seg.bodies, vert, value, box, binary)
        mask = body if body is not None and body.any() else vert
        kji = np.argwhere(mask).mean(axis=0)
        body_centroids[level] = crop_geometry(volume.geometry, box).index_to_lps(kji[::-1])
    hints = _si_hints(body_centroids)
    records = []
    for level, box in sorted(boxes.items(), key=lambda kv: level_index(kv[0])):
        value = lab.levels[level]
        vert = np.asarray(arr[box] == value)
        body = _body_mask(seg.bodies, vert, value, box, binary)
        hu = volume.array[box] if volume.modality == "CT" else None
        fine = seg.fine_bodies.get(level)
        m = measure_vertebra(hu, crop_geometry(volume.geometry, box), vert, body,
                             si_hint=hints.get(level), params=params,
                             height_stability=fine is None)  # else judged on the fine mask
        if fine is not None and m.heights is not None:
            m = _fine_heights(m, fine, hints.get(level), params)
        if level in seg.partial and not m.truncated:
            m = replace(m, truncated=True, heights=None if m.heights is None else replace(
                m.heights, heights=Heights(None, None, None), truncated=True), notes=(
                *m.notes, "body cut by the field of view (partial vertebra): heights not "
                "measured, not graded"))
        confidence = seg.body_confidence.get(level)
        uncertain = confidence is not None and confidence < min_body_probability
        if uncertain:
            m = replace(m, trabecular=None, heights=None, notes=(
                *m.notes, f"body outline uncertain (mean body probability {confidence:.2f} < "
                f"{min_body_probability:g}): density and heights not measured, not graded"))
        else:
            m = _judged_outline(m, level, seg, quality, params)
        texture = (body_texture(hu, body, crop_geometry(volume.geometry, box),
                                m.heights.frame if m.heights else None, params)
                   if hu is not None and body is not None and body.any() and not uncertain
                   else None)
        records.append(VertebraRecord(level, value, m, body_centroids.get(level), texture,
                                      confidence))
    return records
