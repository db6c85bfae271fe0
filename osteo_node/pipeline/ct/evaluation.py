"""Evaluation of the CT analyser on labelled real cases: case lists, scoring per level.

The reference labels (numberings, resampling onto the analysed grid) are read by
``osteo_node.pipeline.ct.references``. Cases whose reference has whole vertebrae only get a
*derived* body reference: the vertebra in front of its body's posterior wall on the
straightened column (``reference_classes``, the same rule as the network's training targets).
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
from osteo_node.pipeline.results import ModelInfo, VertebraResult
from osteo_node.pipeline.stages.volume import load_volume
from osteo_node.pipeline.types import Geometry, LabelVolume, Volume

EDGE_MM = 3.0  # a reference body this close to the first/last slice is cut by the scan
MIN_SCORED_ML = 2.0  # reference vertebrae with less body than this in view are not scored


@dataclass(frozen=True)
class ReferenceSpec:
    """Where a case's reference labels are and how to read them."""

    vertebrae: Path
    numbering: str  # verse | totalseg | totalseg_dataset
    bodies: Path | None = None
    body_values: tuple[int, ...] = (1,)


def given_bodies(spec: ReferenceSpec, geometry: Geometry, shape: tuple[int, ...]
                 ) -> NDArray[np.bool_] | None:
    """The case's own body reference on a grid (None when it has none)."""
    if spec.bodies is None:
        return None
    return np.isin(resample_to_grid(spec.bodies, geometry, shape), spec.body_values)


def derived_bodies(volume: Volume, labels: LabelVolume) -> NDArray[np.bool_] | None:
    """Body reference derived from whole-vertebra labels (see the module docstring)."""
    from osteo_node.pipeline.ct.column import find_canal
    from osteo_node.pipeline.ct.reference_classes import BODY, derive_classes
    from osteo_node.pipeline.ct.straighten import frame_for, sample_labels, unstraighten

    canal = find_canal(volume)
    if canal is None:
        return None
    frame = frame_for(canal, volume)
    classes = derive_classes(sample_labels(labels.array, volume.geometry, frame), frame)
    (body,) = unstraighten([((classes == BODY).astype(np.uint8), 0)], frame, volume.geometry,
                           volume.array.shape)
    return np.asarray((body > 0) & (labels.array > 0))


def reference_bodies(spec: ReferenceSpec, volume: Volume, labels: LabelVolume
                     ) -> tuple[NDArray[np.bool_] | None, str]:
    """Body reference on the volume's grid and where it came from ("given" / "derived")."""
    given = given_bodies(spec, volume.geometry, volume.array.shape)
    if given is not None:
        return given, "given"
    return derived_bodies(volume, labels), "derived"


def reference_segment_fn(spec: ReferenceSpec) -> SegmentFn:
    """A segment function returning the reference labels (for measurement tests / evaluation);
    bodies are the given or derived body reference."""

    def segment(volume: Volume) -> Segmentation:
        shape = volume.array.shape
        labels = reference_label_volume(spec.vertebrae, spec.numbering, volume.geometry, shape)
        bodies, _ = reference_bodies(spec, volume, labels)
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
    fold: str = ""  # leave-one-case-out: the model trained without this case
    #: False: no model was trained without this case (e.g. pseudo-labelled training data);
    #: it is evaluated with the shipped model and its numbers are training fit
    held_out: bool = True

    @classmethod
    def from_mapping(cls, data: dict[str, Any], root: Path, here: Path | None = None) -> Case:
        """Paths are relative to the shared data folder ``root``; a path starting with
        ``./`` is relative to ``here`` (the case list's folder: references kept in the
        repository)."""
        def at(rel: str) -> Path:
            return (here or root) / rel[2:] if rel.startswith("./") else root / rel

        ref = data["reference"]
        return cls(
            name=str(data["name"]),
            input=at(data["input"]),
            reference=ReferenceSpec(
                vertebrae=at(ref["vertebrae"]),
                numbering=str(ref.get("numbering", "verse")),
                bodies=at(ref["bodies"]) if ref.get("bodies") else None,
                body_values=tuple(int(v) for v in ref.get("body_values", [1])),
            ),
            note=str(data.get("note", "")),
            fold=str(data.get("fold", data["name"])),
            held_out=bool(data.get("held_out", True)),
        )


def load_cases(path: Path, root: Path) -> list[Case]:
    import yaml

    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return [Case.from_mapping(c, root, path.parent) for c in data["cases"]]


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
    dice: float | None  # body Dice (vertebra Dice for the sacrum, which has no body)
    vertebra_dice: float | None
    hu: float | None
    hu_reference: float | None
    grade: int | None
    grade_reference: int | None
    complete: bool  # the reference body is not cut by the scan
    graded: bool  # the body found at this reference body's place got a Genant grade
    in_view: bool = True  # enough of the reference body (or sacrum) is in the scan to name it
    #: the analyser's own trabecular ROI drawn on the reference body: the like-for-like
    #: reference (the body eroded by 3 mm keeps the dense subcortical shell, which at 1.5 mm
    #: can be 50-80 HU above the centre of an osteoporotic body)
    hu_reference_roi: float | None = None


@dataclass
class CaseScore:
    name: str
    status: str
    reason: str | None
    body_reference: str  # given | derived
    levels: list[LevelScore]
    extra_levels: list[str]
    timings_s: dict[str, float]
    density_level: str | None = None
    density_hu: float | None = None
    density_hu_reference: float | None = None
    density_hu_reference_roi: float | None = None

    @property
    def scored(self) -> list[LevelScore]:
        """The reference levels with a body (>= MIN_SCORED_ML) in view: a spinous process tip
        or a few voxels of an endplate at the edge of the scan is not a vertebra to name."""
        return [s for s in self.levels if s.in_view]

    @property
    def level_accuracy(self) -> float | None:
        scored = self.scored
        return sum(s.correct for s in scored) / len(scored) if scored else None

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

    @property
    def graded_complete(self) -> tuple[int, int]:
        """(complete reference bodies in the graded range that got a grade, all of them)."""
        complete = [s for s in self.levels if s.complete]
        return sum(s.graded for s in complete), len(complete)

    def hu_difference(self, level: str = "L1") -> float | None:
        for s in self.levels:
            if s.level == level and s.hu is not None and s.hu_reference is not None:
                return s.hu - s.hu_reference
        return None

    @property
    def density_difference(self) -> float | None:
        if self.density_hu is None or self.density_hu_reference is None:
            return None
        return self.density_hu - self.density_hu_reference

    @property
    def density_roi_difference(self) -> float | None:
        if self.density_hu is None or self.density_hu_reference_roi is None:
            return None
        return self.density_hu - self.density_hu_reference_roi

    @property
    def mean_abs_hu_difference(self) -> float | None:
        d = [abs(s.hu - s.hu_reference) for s in self.levels
             if s.hu is not None and s.hu_reference is not None]
        return float(np.mean(d)) if d else None


def _complete(mask: NDArray[np.bool_], volume: Volume) -> bool:
    """The body does not reach the first or last slice of the scan (within EDGE_MM)."""
    ks = np.flatnonzero(mask.any(axis=(1, 2)))
    if ks.size == 0:
        return False
    edge = max(1, round(EDGE_MM / volume.geometry.spacing[2]))
    return bool(ks[0] >= edge and ks[-1] <= volume.array.shape[0] - 1 - edge)


def _body_of(pred: Segmentation, level: str) -> NDArray[np.bool_] | None:
    if level not in pred.labels.levels or pred.bodies is None:
        return None
    value = pred.labels.levels[level]
    if pred.bodies.dtype == bool or int(pred.bodies.max()) <= 1:
        return np.asarray((pred.labels.array == value) & (pred.bodies > 0))
    return np.asarray(pred.bodies == value)


def _graded_here(ref_body: NDArray[np.bool_], pred: Segmentation,
                 by_level: dict[str, VertebraResult]) -> bool:
    """The predicted vertebra that overlaps this reference body most got a grade."""
    hits = pred.labels.array[ref_body]
    hits = hits[hits > 0]
    if hits.size == 0:
        return False
    value = int(np.bincount(hits).argmax())
    name = next((n for n, v in pred.labels.levels.items() if v == value), None)
    v = by_level.get(name) if name else None
    return v is not None and v.genant_grade is not None


def score_case(
    case: Case, segment: SegmentFn, *, centroid_tolerance_mm: float = 10.0,
    roi_margin_mm: float = 3.0,
) -> CaseScore:
    """Run the analyser with ``segment`` and with the reference labels; compare."""
    from osteo_node.pipeline.ct.analyser import CTAnalyser
    from osteo_node.pipeline.stages.grade import GradingRules
    from osteo_node.pipeline.stages.measure import eroded_mean_hu

    capture = CapturingSegment(segment)
    out = CTAnalyser(segment=capture).analyse([case.input])
    ref_out = CTAnalyser(segment=reference_segment_fn(case.reference)).analyse([case.input])
    res = out.result
    if capture.last is None:  # refused before segmentation: nothing to score
        return CaseScore(case.name, res.status, res.reason, "-", [], [], res.timings_s)
    # a refusal after segmentation (e.g. no level of the graded range in view) still has
    # levels and masks to score
    vol = out.volume if out.volume is not None else load_volume(case.input)
    pred = capture.last
    shape, geo = vol.array.shape, vol.geometry
    ref_labels = reference_label_volume(case.reference.vertebrae, case.reference.numbering,
                                        geo, shape)
    ref_bodies, body_kind = reference_bodies(case.reference, vol, ref_labels)
    graded_range = set(GradingRules.default().levels_measured)
    voxel_ml = float(np.prod(geo.spacing)) / 1000.0
    by_level = {v.level: v for v in res.vertebrae}
    ref_by_level = {v.level: v for v in ref_out.result.vertebrae}
    scores: list[LevelScore] = []
    for level, value in ref_labels.levels.items():
        ref_mask = ref_labels.array == value
        ref_body = ref_mask & ref_bodies if ref_bodies is not None else None
        ref_c = centroid_lps(ref_mask, geo)
        found = level in pred.labels.levels
        pred_mask = pred.labels.array == pred.labels.levels[level] if found else None
        err = None
        if pred_mask is not None and ref_c is not None:
            pc = centroid_lps(pred_mask, geo)
            err = None if pc is None else float(np.linalg.norm(pc - ref_c))
        vdice = dice(pred_mask, ref_mask) if pred_mask is not None else None
        pb = _body_of(pred, level)
        if level == "S1":
            bdice = vdice
        elif pb is not None and ref_body is not None and ref_body.any():
            bdice = dice(pb, ref_body)
        else:
            bdice = None
        hu_ref = None
        if ref_body is not None and ref_body.any():
            hu_ref = eroded_mean_hu(vol.array, geo, ref_body, roi_margin_mm)
        v, rv = by_level.get(level), ref_by_level.get(level)
        has_body = ref_body is not None and bool(ref_body.any())
        complete = level in graded_range and has_body and _complete(ref_mask, vol)
        shown = ref_mask if level == "S1" or ref_body is None else ref_body
        in_view = float(shown.sum()) * voxel_ml >= MIN_SCORED_ML
        scores.append(LevelScore(
            level=level, found=found, centroid_error_mm=err,
            correct=err is not None and err <= centroid_tolerance_mm, dice=bdice,
            vertebra_dice=vdice,
            hu=v.trabecular_hu.mean if v and v.trabecular_hu else None, hu_reference=hu_ref,
            grade=v.genant_grade if v else None, grade_reference=rv.genant_grade if rv else None,
            complete=complete,
            graded=complete and ref_body is not None and _graded_here(ref_body, pred, by_level),
            in_view=in_view,
            hu_reference_roi=rv.trabecular_hu.mean if rv and rv.trabecular_hu else None,
        ))
    extra = _extra_levels(pred, ref_labels, geo)
    score = CaseScore(case.name, res.status, res.reason, body_kind, scores, extra,
                      res.timings_s)
    _density(score, res.findings)
    return score


def _extra_levels(pred: Segmentation, ref_labels: LabelVolume, geo: Geometry) -> list[str]:
    """Predicted levels the reference does not have, with the nearest reference level."""
    ref_centroids = {lv: c for lv, value in ref_labels.levels.items()
                     if (c := centroid_lps(ref_labels.array == value, geo)) is not None}
    extra = []
    for lv, value in pred.labels.levels.items():
        if lv in ref_labels.levels:
            continue
        pc = centroid_lps(pred.labels.array == value, geo)
        near, dist = nearest_level(pc, ref_centroids) if pc is not None else (None, 0.0)
        extra.append(f"{lv} (nearest reference {near}, {dist:.1f} mm)" if near else lv)
    return extra


def _density(score: CaseScore, findings: Any) -> None:
    if findings is None or findings.density_level is None:
        return
    score.density_level = findings.density_level
    match = next((s for s in score.levels if s.level == findings.density_level), None)
    score.density_hu = match.hu if match else findings.l1_hu
    score.density_hu_reference = match.hu_reference if match else None
    score.density_hu_reference_roi = match.hu_reference_roi if match else None
