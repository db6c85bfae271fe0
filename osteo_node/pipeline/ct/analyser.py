"""The CT analyser: select -> volume -> segment -> measure -> phase -> grade -> result.

Each stage is a typed function; :class:`CTAnalyser` wires them, times them, reports progress and
turns every refusal into a ``not_analysable`` result with the precise reason (never raises for
bad input). The segmentation function is an explicit constructor parameter (tests inject one
that returns reference labels); by default it is the project's ONNX model
(``osteo_node.pipeline.stages.segment``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import structlog
from numpy.typing import NDArray
from scipy import ndimage

from osteo_node.clinical.red_flags import BodyTexture, body_texture
from osteo_node.pipeline.ct.phase import PhaseResult, PhaseRules, detect_phase
from osteo_node.pipeline.results import (
    LEVELS,
    AnalysisOutput,
    AnalysisResult,
    Findings,
    ModelInfo,
    VertebraResult,
    level_index,
)
from osteo_node.pipeline.stages.grade import (
    GradingRules,
    density_call,
    grade_spine,
    level_uncertain,
)
from osteo_node.pipeline.stages.measure import (
    Heights,
    MeasureParams,
    VertebraMeasurement,
    measure_vertebra,
)
from osteo_node.pipeline.stages.select import SelectionRules, select_series
from osteo_node.pipeline.stages.timing import timed_stage
from osteo_node.pipeline.stages.volume import (
    LoadedVolume,
    VolumeError,
    is_nifti,
    list_files,
    load_dicom,
    load_nifti,
    read_headers,
)
from osteo_node.pipeline.types import Geometry, LabelVolume, Volume

log = structlog.get_logger(__name__)


class NotAnalysable(Exception):
    """A stage refuses the input; the message is the reason reported to the user."""


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


SegmentFn = Callable[[Volume], Segmentation]
OUTLINE_HU = -400.0  # patient outline: voxels above this (air is about -1000 HU)
UNRESOLVED_ENDPLATE = ("endplate not resolved: the body was separated from its neighbour by a "
                       "cut where the segmentation saw no disc; heights not measured, not graded")
ProgressFn = Callable[[str, str], None]


def default_segment_fn() -> SegmentFn:
    """The project's segmentation model (CTMODEL's ``segment`` stage)."""
    try:
        from osteo_node.pipeline.stages import segment as segment_stage
    except ImportError as exc:
        missing = str(exc)

        def unavailable(volume: Volume) -> Segmentation:
            raise NotAnalysable(f"vertebra segmentation model not available: {missing}")

        return unavailable
    fn: SegmentFn = segment_stage.segment_for_analysis
    return fn


@dataclass
class VertebraRecord:
    level: str
    value: int
    measurement: VertebraMeasurement
    body_centroid: NDArray[np.float64] | None
    texture: BodyTexture | None = None
    body_confidence: float | None = None


@dataclass
class AnalysisContext:
    """State passed between stages (typed, filled stage by stage)."""

    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    study_uid: str | None = None
    series_uid: str | None = None


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


def measure_stage(
    volume: Volume, seg: Segmentation, levels: Sequence[str], params: MeasureParams,
    min_body_probability: float = 0.0,
) -> list[VertebraRecord]:
    """Measure every labelled vertebra among ``levels`` (crops around each, low memory)."""
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
        m = measure_vertebra(hu, crop_geometry(volume.geometry, box), vert, body,
                             si_hint=hints.get(level), params=params)
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
        elif level in seg.heights_unmeasurable and m.heights is not None:
            m = replace(m, heights=replace(m.heights, heights=Heights(None, None, None)),
                        notes=(*m.notes, UNRESOLVED_ENDPLATE))
        texture = (body_texture(hu, body, crop_geometry(volume.geometry, box),
                                m.heights.frame if m.heights else None, params)
                   if hu is not None and body is not None and body.any() and not uncertain
                   else None)
        records.append(VertebraRecord(level, value, m, body_centroids.get(level), texture,
                                      confidence))
    return records


@dataclass(frozen=True)
class QualityRules:
    min_vertebra_p95_hu: float
    min_vertebra_volume_ml: float
    max_lateral_offset_mm: float
    min_body_probability: float = 0.0

    @classmethod
    def default(cls) -> QualityRules:
        from osteo_node.clinical_data import load

        q = load("ct_screening")["quality"]
        return cls(float(q["min_vertebra_p95_hu"]["value"]),
                   float(q["min_vertebra_volume_ml"]["value"]),
                   float(q["max_lateral_offset_mm"]["value"]),
                   float(q["min_body_probability"]["value"]))


def lateral_offset_mm(volume: Volume, centroid_kji: NDArray[np.float64]) -> float | None:
    """Left-right distance (mm) of a point from the centre of the patient outline in its slice."""
    m = volume.geometry.matrix
    if abs(m[2, 2]) < 0.9:  # only for axial stacks
        return None
    k = int(np.clip(round(float(centroid_kji[0])), 0, volume.array.shape[0] - 1))
    body = volume.array[k] > OUTLINE_HU
    lab, n = ndimage.label(body)
    if n == 0:
        return None
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    jj, ii = np.nonzero(lab == int(np.argmax(sizes)))
    centre = volume.geometry.index_to_lps((float(ii.mean()), float(jj.mean()), float(k)))
    point = volume.geometry.index_to_lps(centroid_kji[::-1])
    return abs(float(point[0] - centre[0]))


def drop_implausible(volume: Volume, labels: LabelVolume, rules: QualityRules) -> list[str]:
    """Remove labelled 'vertebrae' that hold no cortical bone or are too small; say which."""
    arr = labels.array
    if not labels.levels or not np.issubdtype(arr.dtype, np.integer):
        return []
    voxel_ml = float(np.prod(volume.geometry.spacing)) / 1000.0
    objects = ndimage.find_objects(arr, max_label=int(max(labels.levels.values())))
    out: list[str] = []
    for level, value in list(labels.levels.items()):
        box = objects[value - 1] if value - 1 < len(objects) else None
        if box is None:
            del labels.levels[level]
            continue
        mask = arr[box] == value
        hu = volume.array[box][mask]
        volume_ml = mask.sum() * voxel_ml
        p95 = float(np.percentile(hu, 95)) if volume.modality == "CT" else float("inf")
        why = None
        if volume_ml < rules.min_vertebra_volume_ml:
            why = (f"{volume_ml:.1f} ml, smaller than any vertebra "
                   f"(< {rules.min_vertebra_volume_ml:g} ml)")
        elif p95 < rules.min_vertebra_p95_hu:
            why = (f"95th percentile {p95:.0f} HU < {rules.min_vertebra_p95_hu:g} HU: "
                   "no cortical bone")
        else:
            start = np.array([s.start for s in box], dtype=np.float64)
            offset = lateral_offset_mm(volume, np.argwhere(mask).mean(axis=0) + start)
            if offset is not None and offset > rules.max_lateral_offset_mm:
                why = f"{offset:.0f} mm lateral of the trunk centre: not the spine"
        if why is not None:
            arr[box][mask] = 0
            del labels.levels[level]
            labels.confidence.pop(level, None)
            out.append(f"segmented {level} rejected as implausible ({why})")
    return out


def result_for_refusal(
    reason: str, ctx: AnalysisContext, modality: str = "CT"
) -> AnalysisResult:
    return AnalysisResult(
        status="not_analysable", reason=reason, modality=modality,
        study_instance_uid=ctx.study_uid, series_instance_uid=ctx.series_uid,
        contrast_phase=None, model=None, timings_s=dict(ctx.timings), warnings=list(ctx.warnings),
    )


class CTAnalyser:
    """Registered for modality CT. ``analyse(paths)``: DICOM files/folders or one NIfTI file."""

    name = "ct-vertebrae"

    def __init__(
        self,
        segment: SegmentFn | None = None,
        *,
        selection_rules: SelectionRules | None = None,
        grading_rules: GradingRules | None = None,
        measure_params: MeasureParams | None = None,
        phase_rules: PhaseRules | None = None,
        quality: QualityRules | None = None,
        progress: ProgressFn | None = None,
    ) -> None:
        self.segment = segment or default_segment_fn()
        self.selection_rules = selection_rules or SelectionRules.load()
        self.grading_rules = grading_rules or GradingRules.default()
        self.measure_params = measure_params or MeasureParams.default()
        self.phase_rules = phase_rules or PhaseRules.default()
        self.quality = quality or QualityRules.default()
        self.progress = progress

    # -- plumbing -------------------------------------------------------------------------
    def _stage(self, ctx: AnalysisContext, name: str,
               message: str = "") -> AbstractContextManager[None]:
        return timed_stage(ctx.timings, self.progress, name, message)

    def analyse(self, paths: Sequence[Path]) -> AnalysisOutput:
        ctx = AnalysisContext()
        t0 = time.perf_counter()
        try:
            out = self._analyse(list(paths), ctx)
        except NotAnalysable as exc:
            out = AnalysisOutput(result_for_refusal(str(exc), ctx))
        except VolumeError as exc:
            out = AnalysisOutput(result_for_refusal(f"series not loadable: {exc}", ctx))
        except Exception as exc:
            log.exception("ct_analysis_failed", series_uid=ctx.series_uid)
            out = AnalysisOutput(result_for_refusal(
                f"internal error during analysis ({exc.__class__.__name__}: {exc})", ctx
            ))
        out.result.timings_s["total"] = round(time.perf_counter() - t0, 3)
        if self.progress is not None:
            self.progress("done", out.result.status)
        return out

    # -- stages ---------------------------------------------------------------------------
    def _load(self, paths: list[Path], ctx: AnalysisContext) -> LoadedVolume:
        if len(paths) == 1 and is_nifti(paths[0]):
            with self._stage(ctx, "volume", f"reading NIfTI {paths[0].name}"):
                return load_nifti(paths[0])
        with self._stage(ctx, "select", "reading headers and selecting the series"):
            headers, skipped = read_headers(list_files(paths))
            if skipped:
                ctx.warnings.append(f"{len(skipped)} file(s) skipped: {skipped[0]}")
            if not headers:
                raise NotAnalysable("no DICOM instances found")
            ctx.study_uid = str(headers[0].ds.get("StudyInstanceUID", "") or "") or None
            selection = select_series([h.ds for h in headers], self.selection_rules)
            if selection.chosen is None:
                raise NotAnalysable(selection.reason)
            chosen = [headers[i] for i in selection.chosen.indices]
            ctx.series_uid = str(chosen[0].ds.get("SeriesInstanceUID", "") or "") or None
            others = [c for c in selection.candidates if c is not selection.chosen]
            for c in others:
                why = "; ".join(c.reasons) or "another series was preferred"
                ctx.warnings.append(f"series {c.series_instance_uid} not used: {why}")
        with self._stage(ctx, "volume", f"loading {len(chosen)} slices"):
            return load_dicom(chosen, self.selection_rules.volume)

    def _analyse(self, paths: list[Path], ctx: AnalysisContext) -> AnalysisOutput:
        if not paths:
            raise NotAnalysable("no input files")
        loaded = self._load(paths, ctx)
        volume = loaded.volume
        ctx.warnings.extend(loaded.warnings)
        ctx.study_uid = volume.study_instance_uid or ctx.study_uid
        ctx.series_uid = volume.series_instance_uid or ctx.series_uid
        if volume.modality != "CT":
            raise NotAnalysable(f"modality {volume.modality} is not CT")
        with self._stage(ctx, "segment", "vertebra segmentation"):
            seg = self.segment(volume)
        labels = seg.labels
        rejected = drop_implausible(volume, labels, self.quality)
        present = [lv for lv in labels.levels if lv in LEVELS]
        if not present or not np.any(labels.array):
            extra = f" ({'; '.join(rejected)})" if rejected else ""
            raise NotAnalysable(
                "no vertebra found in the field of view (spine not in the scanned region?)"
                + extra
            )
        ctx.warnings.extend(rejected)
        wanted = set(self.grading_rules.levels_measured)
        in_range = [lv for lv in present if lv in wanted]
        if not in_range:
            found = ", ".join(sorted(present, key=level_index))
            raise NotAnalysable(
                f"no vertebra between {self.grading_rules.levels_measured[0]} and "
                f"{self.grading_rules.levels_measured[-1]} in view (found {found})"
            )
        with self._stage(ctx, "measure", f"measuring {len(in_range)} vertebrae"):
            records = measure_stage(volume, seg, in_range, self.measure_params,
                                    self.quality.min_body_probability)
        if records and not any(r.measurement.trabecular is not None
                               or (r.measurement.heights is not None
                                   and r.measurement.heights.heights.posterior is not None)
                               for r in records):
            # nothing measurable: a result with levels and no values would only be noise in PACS
            why = sorted({n for r in records for n in r.measurement.notes})
            raise NotAnalysable(
                f"vertebrae found ({', '.join(r.level for r in records)}) but none could be "
                f"measured: {'; '.join(why)}")
        with self._stage(ctx, "phase", "contrast phase"):
            centroids = [r.body_centroid for r in records if r.body_centroid is not None]
            phase = detect_phase(volume.header, volume.array, volume.geometry, labels.array,
                                 centroids, rules=self.phase_rules)
        with self._stage(ctx, "grade", "grading"):
            result = self._grade(records, labels, seg.model, phase, ctx)
        result.timings_s = dict(ctx.timings)
        result.label_map = {lv: int(v) for lv, v in labels.levels.items()}
        result.warnings.extend(labels.notes)
        return AnalysisOutput(result=result, volume=volume, labels=labels)

    def _grade(
        self, records: list[VertebraRecord], labels: LabelVolume, model: ModelInfo | None,
        phase: PhaseResult, ctx: AnalysisContext,
    ) -> AnalysisResult:
        rules = self.grading_rules
        heights = {
            r.level: (r.measurement.heights.heights
                      if r.measurement.heights is not None and not r.measurement.heights.truncated
                      else None)
            for r in records
        }
        grades = grade_spine(heights, rules)
        vertebrae: list[VertebraResult] = []
        for r in records:
            m, g = r.measurement, grades[r.level]
            notes = list(m.notes) + list(g.notes)
            level_conf = round(float(labels.confidence.get(r.level, 0.0)), 3)
            uncertain = level_uncertain(level_conf, rules)
            if uncertain:
                notes.append(f"level uncertain (level confidence {level_conf:g} < "
                             f"{rules.min_level_confidence:g}): named without a reliable "
                             "anatomical landmark; verify the level on the images")
            vertebrae.append(VertebraResult(
                level=r.level,
                level_confidence=level_conf,
                level_uncertain=uncertain,
                label_value=int(r.value),
                centroid_mm=tuple(round(c, 2) for c in m.centroid_mm),  # type: ignore[arg-type]
                trabecular_hu=m.trabecular,
                heights_mm=heights[r.level],
                height_loss=g.height_loss,
                morphology=g.morphology,
                genant_grade=g.genant_grade,
                notes=tuple(notes),
                texture=r.texture.to_json() if r.texture is not None else None,
                segmentation_confidence=r.body_confidence,
            ))
        unsure = {v.level for v in vertebrae if v.level_uncertain}
        trab = {r.level: r.measurement.trabecular for r in records}
        truncated = [r.level for r in records if r.measurement.truncated]
        call = density_call(trab, grades, phase.phase, phase.contrast_given, rules,
                            incomplete=truncated)
        graded = [v for v in vertebrae if v.genant_grade is not None]
        vcf = tuple(v.level for v in graded if v.genant_grade >= rules.fracture_min_grade)  # type: ignore[operator]
        findings = Findings(
            osteoporosis_suspected=call.osteoporosis_suspected,
            l1_hu=call.measured_hu,
            density_level=call.level,
            density_category=call.category,
            vcf_levels=vcf,
            max_genant_grade=max((v.genant_grade for v in graded), default=None),  # type: ignore[type-var]
            density_level_uncertain=None if call.level is None else call.level in unsure,
            graded_levels=tuple(v.level for v in graded),
        )
        warnings = list(ctx.warnings)
        warnings.extend(call.notes)
        if not graded:
            warnings.append("no vertebra could be graded (heights not measurable): compression "
                            "fractures were NOT assessed; an empty vcf_levels is not 'no fracture'")
        if unsure:
            warnings.append("level uncertain: " + ", ".join(
                v.level for v in vertebrae if v.level_uncertain)
                + f" (level confidence < {rules.min_level_confidence:g}; see the labelling "
                "notes): names may be off by one or more levels")
        if findings.density_level_uncertain:
            warnings.append(f"density level uncertain: the vertebra measured as {call.level} "
                            "is named by assumption and may be another level")
        warnings.append(f"contrast phase {phase.phase} ({phase.source}: "
                        f"{'; '.join(phase.evidence)})")
        if truncated:
            warnings.append(
                "partial coverage: " + ", ".join(truncated)
                + " cut by the edge of the scanned volume (heights and grades not assessed)"
            )
        if call.level in truncated:
            warnings.append(f"density level {call.level} is cut by the edge of the scanned "
                            "volume: its ROI covers only part of the body")
        missing = [lv for lv in rules.levels_measured if lv not in labels.levels]
        if missing:
            warnings.append(f"levels not in view: {', '.join(missing)}")
        return AnalysisResult(
            status="analysed", reason=None, modality="CT",
            study_instance_uid=ctx.study_uid, series_instance_uid=ctx.series_uid,
            contrast_phase=phase.phase, model=model, vertebrae=vertebrae, findings=findings,
            timings_s=dict(ctx.timings), warnings=warnings,
        )


def create() -> CTAnalyser:
    """Registry factory (``osteo_node.pipeline.registry``)."""
    return CTAnalyser()
