"""The CT analyser: select -> volume -> segment -> measure -> phase -> grade -> result.

Each stage is a typed function; :class:`CTAnalyser` wires them, times them, reports progress and
turns every refusal into a ``not_analysable`` result with the precise reason (never raises for
bad input). The segmentation function is an explicit constructor parameter (tests inject one
that returns reference labels); by default it is the project's column segmentation with the
shipped sagittal ONNX model (``osteo_node.pipeline.ct.segment``).

The stages' types live in :mod:`.stage_types` (re-exported here: ``Segmentation``,
``SegmentFn``, ``NotAnalysable``), the plausibility check of the labels in
:mod:`.label_quality`, the measure stage in :mod:`.measure_levels` and the grading and result
assembly in :mod:`.result_assembly`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path

import numpy as np
import structlog

from osteo_node.pipeline.ct.label_quality import QualityRules, drop_implausible
from osteo_node.pipeline.ct.measure_levels import VertebraRecord, measure_stage
from osteo_node.pipeline.ct.phase import PhaseRules, detect_phase
from osteo_node.pipeline.ct.result_assembly import assemble_result, result_for_refusal
from osteo_node.pipeline.ct.stage_types import (
    AnalysisContext,
    NotAnalysable,
    Segmentation,
    SegmentFn,
)
from osteo_node.pipeline.results import LEVELS, AnalysisOutput, level_index
from osteo_node.pipeline.stages.grade import GradingRules
from osteo_node.pipeline.stages.measure import MeasureParams
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
from osteo_node.pipeline.types import Volume
from osteo_node.safe_errors import describe

__all__ = [
    "AnalysisContext",
    "CTAnalyser",
    "NotAnalysable",
    "ProgressFn",
    "QualityRules",
    "SegmentFn",
    "Segmentation",
    "VertebraRecord",
    "create",
    "default_segment_fn",
    "drop_implausible",
    "measure_stage",
    "result_for_refusal",
]

log = structlog.get_logger(__name__)

ProgressFn = Callable[[str, str], None]


def default_segment_fn() -> SegmentFn:
    """The project's column segmentation with the shipped model."""
    from osteo_node.pipeline.ct.segment import segment_for_analysis

    return segment_for_analysis


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
        return self._guarded(lambda ctx: self._analyse(list(paths), ctx))

    def analyse_volume(self, volume: Volume) -> AnalysisOutput:
        """Analyse a volume already in memory (evaluation on deformed real CT, tests)."""
        return self._guarded(lambda ctx: self._analyse_volume(volume, ctx))

    def _guarded(self, body: Callable[[AnalysisContext], AnalysisOutput]) -> AnalysisOutput:
        ctx = AnalysisContext()
        t0 = time.perf_counter()
        try:
            out = body(ctx)
        except NotAnalysable as exc:
            out = AnalysisOutput(result_for_refusal(str(exc), ctx))
        except VolumeError as exc:
            out = AnalysisOutput(result_for_refusal(f"series not loadable: {exc}", ctx))
        except Exception as exc:  # noqa: BLE001 - never raise: a refusal, described without PHI
            log.error("ct_analysis_failed", series_uid=ctx.series_uid, error=describe(exc))
            out = AnalysisOutput(result_for_refusal(
                f"internal error during analysis ({describe(exc)})", ctx
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
            ctx.warnings.extend(selection.chosen.excluded)
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
        ctx.warnings.extend(loaded.warnings)
        return self._analyse_volume(loaded.volume, ctx)

    def _analyse_volume(self, volume: Volume, ctx: AnalysisContext) -> AnalysisOutput:
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
            why = [*labels.notes, *rejected]
            extra = f" ({'; '.join(why)})" if why else ""
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
            records = measure_stage(volume, seg, in_range, self.measure_params, self.quality)
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
            result = assemble_result(records, labels, seg.model, phase, ctx,
                                     rules=self.grading_rules)
        result.timings_s = dict(ctx.timings)
        result.label_map = {lv: int(v) for lv, v in labels.levels.items()}
        result.warnings.extend(labels.notes)
        return AnalysisOutput(result=result, volume=volume, labels=labels)


def create() -> CTAnalyser:
    """Registry factory (``osteo_node.pipeline.registry``)."""
    return CTAnalyser()
