"""Evaluation of the CT analyser on labelled real cases: case lists, scoring per level.

The reference labels (numberings, resampling onto the analysed grid) are read by
``osteo_node.pipeline.ct.references``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from osteo_node.pipeline.ct.analyser import Segmentation, SegmentFn
from osteo_node.pipeline.ct.references import (
    VERSE_NAMES,
    centroid_lps,
    reference_label_volume,
    resample_to_grid,
)
from osteo_node.pipeline.metrics import dice
from osteo_node.pipeline.results import ModelInfo
from osteo_node.pipeline.types import Geometry, Volume


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


@dataclass(frozen=True)
class Case:
    name: str
    input: Path
    reference: ReferenceSpec
    note: str = ""

    @classmethod
    def from_mapping(cls, data: dict[str, Any], root: Path) -> Case:
        ref = data["reference"]
        return cls(
            name=str(data["name"]),
            input=root / data["input"],
            reference=ReferenceSpec(
                vertebrae=root / ref["vertebrae"],
                numbering=str(ref.get("numbering", "verse")),
                bodies=root / ref["bodies"] if ref.get("bodies") else None,
                body_values=tuple(int(v) for v in ref.get("body_values", [1])),
            ),
            note=str(data.get("note", "")),
        )


def load_cases(path: Path, root: Path) -> list[Case]:
    import yaml

    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return [Case.from_mapping(c, root) for c in data["cases"]]


class CapturingSegment:
    """Wraps a segment function and keeps its last output (to score body masks)."""

    def __init__(self, fn: SegmentFn) -> None:
        self.fn = fn
        self.last: Segmentation | None = None

    def __call__(self, volume: Volume) -> Segmentation:
        self.last = self.fn(volume)
        return self.last


@dataclass
class LevelScore:
    level: str
    found: bool
    centroid_error_mm: float | None
    correct: bool
    dice: float | None
    hu: float | None
    hu_reference: float | None
    grade: int | None
    grade_reference: int | None


@dataclass
class CaseScore:
    name: str
    status: str
    reason: str | None
    dice_kind: str  # "body" or "vertebra"
    levels: list[LevelScore]
    extra_levels: list[str]
    timings_s: dict[str, float]

    @property
    def level_accuracy(self) -> float | None:
        return sum(s.correct for s in self.levels) / len(self.levels) if self.levels else None

    @property
    def mean_dice(self) -> float | None:
        d = [s.dice for s in self.levels if s.dice is not None]
        return float(np.mean(d)) if d else None

    @property
    def mean_centroid_error(self) -> float | None:
        e = [s.centroid_error_mm for s in self.levels if s.centroid_error_mm is not None]
        return float(np.mean(e)) if e else None

    @property
    def grade_agreement(self) -> float | None:
        pairs = [(s.grade, s.grade_reference) for s in self.levels
                 if s.grade is not None and s.grade_reference is not None]
        return sum(a == b for a, b in pairs) / len(pairs) if pairs else None

    def hu_difference(self, level: str = "L1") -> float | None:
        for s in self.levels:
            if s.level == level and s.hu is not None and s.hu_reference is not None:
                return s.hu - s.hu_reference
        return None

    @property
    def mean_abs_hu_difference(self) -> float | None:
        d = [abs(s.hu - s.hu_reference) for s in self.levels
             if s.hu is not None and s.hu_reference is not None]
        return float(np.mean(d)) if d else None


def score_case(
    case: Case, segment: SegmentFn, *, centroid_tolerance_mm: float = 10.0,
    roi_margin_mm: float = 3.0,
) -> CaseScore:
    """Run the analyser with ``segment`` and with the reference labels; compare."""
    from osteo_node.pipeline.ct.analyser import CTAnalyser
    from osteo_node.pipeline.stages.measure import eroded_mean_hu

    capture = CapturingSegment(segment)
    out = CTAnalyser(segment=capture).analyse([case.input])
    ref_out = CTAnalyser(segment=reference_segment_fn(case.reference)).analyse([case.input])
    res = out.result
    if out.volume is None or res.status != "analysed" or capture.last is None:
        return CaseScore(case.name, res.status, res.reason, "-", [], [], res.timings_s)
    vol, pred = out.volume, capture.last
    shape, geo = vol.array.shape, vol.geometry
    ref_labels = reference_label_volume(case.reference.vertebrae, case.reference.numbering,
                                        geo, shape)
    ref_bodies = reference_bodies(case.reference, geo, shape)
    dice_kind = "body" if ref_bodies is not None and pred.bodies is not None else "vertebra"
    by_level = {v.level: v for v in res.vertebrae}
    ref_by_level = {v.level: v for v in ref_out.result.vertebrae}
    scores: list[LevelScore] = []
    for level, value in ref_labels.levels.items():
        ref_mask = ref_labels.array == value
        ref_c = centroid_lps(ref_mask, geo)
        found = level in pred.labels.levels
        pred_mask = pred.labels.array == pred.labels.levels[level] if found else None
        err = None
        if pred_mask is not None and ref_c is not None:
            pc = centroid_lps(pred_mask, geo)
            err = None if pc is None else float(np.linalg.norm(pc - ref_c))
        d = None
        if pred_mask is not None and not (dice_kind == "body" and level == "S1"):
            # the sacrum has no vertebral-body mask in the pipeline: no body Dice for it
            if dice_kind == "body":
                assert ref_bodies is not None and pred.bodies is not None
                pb = pred_mask & (pred.bodies > 0) if pred.bodies.dtype == bool or \
                    int(pred.bodies.max()) <= 1 else pred.bodies == pred.labels.levels[level]
                d = dice(pb, ref_mask & ref_bodies)
            else:
                d = dice(pred_mask, ref_mask)
        hu_ref = None
        if ref_bodies is not None and np.any(ref_mask & ref_bodies):
            hu_ref = eroded_mean_hu(vol.array, geo, ref_mask & ref_bodies, roi_margin_mm)
        v, rv = by_level.get(level), ref_by_level.get(level)
        scores.append(LevelScore(
            level=level, found=found, centroid_error_mm=err,
            correct=err is not None and err <= centroid_tolerance_mm, dice=d,
            hu=v.trabecular_hu.mean if v and v.trabecular_hu else None, hu_reference=hu_ref,
            grade=v.genant_grade if v else None, grade_reference=rv.genant_grade if rv else None,
        ))
    ref_centroids = {lv: c for lv, value in ref_labels.levels.items()
                     if (c := centroid_lps(ref_labels.array == value, geo)) is not None}
    extra = []
    for lv, value in pred.labels.levels.items():
        if lv in ref_labels.levels:
            continue
        pc = centroid_lps(pred.labels.array == value, geo)
        near, dist = nearest_level(pc, ref_centroids) if pc is not None else (None, 0.0)
        extra.append(f"{lv} (nearest reference {near}, {dist:.1f} mm)" if near else lv)
    return CaseScore(case.name, res.status, res.reason, dice_kind, scores, extra, res.timings_s)
