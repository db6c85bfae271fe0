"""The MR analyser: select -> volume -> segment bodies -> levels -> heights -> grades -> result.

Same JSON schema and the same measure/grade code as the CT analyser; MR has no Hounsfield
units, so ``trabecular_hu`` is None and there is no density call. Every refusal becomes a
``not_analysable`` result with the reason; the analyser never raises for bad input.

Level names (``mr/levels.py``): counted up from the lowest body taken as L5 (confidence 0.8,
the CT sacrum-anchor value, minus 0.03 per level) or relative V1..Vn (0.0). They are judged by
the CT rule ``grade.level_uncertain`` (same confidence scale): relative labels and names counted
above T11 are reported as uncertain ("V1?", "T10?").
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path

import structlog

from osteo_node.models.manifest import ModelError
from osteo_node.pipeline.mr.heights import BodyHeights, measure_bodies
from osteo_node.pipeline.mr.model import BodyModel
from osteo_node.pipeline.mr.segment import MRSegmentation, segment_bodies
from osteo_node.pipeline.mr.select import MRSelectionRules, select_mr_series
from osteo_node.pipeline.results import (
    LEVELS,
    AnalysisOutput,
    AnalysisResult,
    Findings,
    Heights,
    VertebraResult,
)
from osteo_node.pipeline.stages.context import AnalysisContext, NotAnalysable
from osteo_node.pipeline.stages.grade import (
    GradingRules,
    ShapeGrade,
    grade_shape,
    grade_spine,
    level_uncertain,
    level_uncertain_note,
    level_uncertain_warning,
)
from osteo_node.pipeline.stages.measure import MeasureParams
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
from osteo_node.safe_errors import describe

log = structlog.get_logger(__name__)

ProgressFn = Callable[[str, str], None]


def grade_bodies(
    names: Sequence[str], heights: Sequence[Heights | None], rules: GradingRules
) -> list[ShapeGrade]:
    """Shared CT grading (``grade_spine``); relative names get consecutive stand-in levels.

    ``grade_spine`` only uses the level names to find neighbours, so bodies V1..Vn are graded
    as if they were n consecutive levels, which they are (ordered, contiguous).
    """
    if all(n in LEVELS for n in names):
        stand_in = list(names)
    elif len(names) <= len(LEVELS):
        stand_in = list(LEVELS[: len(names)])
    else:
        return [grade_shape(h, None, rules) for h in heights]
    graded = grade_spine(dict(zip(stand_in, heights, strict=True)), rules)
    return [graded[s] for s in stand_in]


class MRAnalyser:
    """Registered for modality MR. ``analyse(paths)``: DICOM files/folders or one NIfTI file."""

    name = "mr-vertebral-bodies"

    def __init__(
        self,
        model_dir: Path | None = None,
        *,
        selection_rules: MRSelectionRules | None = None,
        grading_rules: GradingRules | None = None,
        measure_params: MeasureParams | None = None,
        progress: ProgressFn | None = None,
        threads: int = 2,
    ) -> None:
        self.model_dir = model_dir
        self.selection_rules = selection_rules or MRSelectionRules()
        self.grading_rules = grading_rules or GradingRules.default()
        self.measure_params = measure_params or MeasureParams.default()
        self.progress = progress
        self.threads = threads
        self._model: BodyModel | None = None

    @property
    def model(self) -> BodyModel:
        if self._model is None:
            self._model = BodyModel.load(self.model_dir, threads=self.threads)
        return self._model

    def _stage(self, ctx: AnalysisContext, name: str,
               message: str = "") -> AbstractContextManager[None]:
        return timed_stage(ctx.timings, self.progress, name, message)

    def analyse(self, paths: Sequence[Path]) -> AnalysisOutput:
        ctx = AnalysisContext()
        t0 = time.perf_counter()
        try:
            out = self._analyse([Path(p) for p in paths], ctx)
        except NotAnalysable as exc:
            out = AnalysisOutput(self._refusal(str(exc), ctx))
        except VolumeError as exc:
            out = AnalysisOutput(self._refusal(f"series not loadable: {exc}", ctx))
        except ModelError as exc:
            out = AnalysisOutput(self._refusal(f"MR model not available: {exc}", ctx))
        except Exception as exc:  # noqa: BLE001 - never raise: a refusal, described without PHI
            log.error("mr_analysis_failed", series_uid=ctx.series_uid, error=describe(exc))
            out = AnalysisOutput(
                self._refusal(
                    f"internal error during analysis ({describe(exc)})", ctx
                )
            )
        out.result.timings_s["total"] = round(time.perf_counter() - t0, 3)
        if self.progress is not None:
            self.progress("done", out.result.status)
        return out

    @staticmethod
    def _refusal(reason: str, ctx: AnalysisContext) -> AnalysisResult:
        return AnalysisResult(
            status="not_analysable",
            reason=reason,
            modality="MR",
            study_instance_uid=ctx.study_uid,
            series_instance_uid=ctx.series_uid,
            contrast_phase=None,
            model=None,
            timings_s=dict(ctx.timings),
            warnings=list(ctx.warnings),
        )

    def _load(self, paths: list[Path], ctx: AnalysisContext) -> LoadedVolume:
        if len(paths) == 1 and is_nifti(paths[0]):
            with self._stage(ctx, "volume", f"reading NIfTI {paths[0].name}"):
                loaded = load_nifti(paths[0], modality="MR")
            ctx.warnings.append("NIfTI input: sequence and orientation checks not applied")
            return loaded
        with self._stage(ctx, "select", "reading headers and selecting the series"):
            headers, skipped = read_headers(list_files(paths))
            if skipped:
                ctx.warnings.append(f"{len(skipped)} file(s) skipped: {skipped[0]}")
            if not headers:
                raise NotAnalysable("no DICOM instances found")
            ctx.study_uid = str(headers[0].ds.get("StudyInstanceUID", "") or "") or None
            selection = select_mr_series([h.ds for h in headers], self.selection_rules)
            if selection.chosen is None:
                raise NotAnalysable(selection.reason)
            chosen_c = selection.chosen
            chosen = [headers[i] for i in chosen_c.indices]
            ctx.series_uid = str(chosen[0].ds.get("SeriesInstanceUID", "") or "") or None
            ctx.warnings.append(
                f"series: {chosen_c.orientation} {chosen_c.sequence.weighting} "
                f"({chosen_c.sequence.evidence})"
            )
            for c in selection.candidates:
                if c is not chosen_c:
                    why = "; ".join(c.reasons) or "another series was preferred"
                    ctx.warnings.append(f"series {c.series_instance_uid} not used: {why}")
        with self._stage(ctx, "volume", f"loading {len(chosen)} slices"):
            return load_dicom(chosen)

    def _analyse(self, paths: list[Path], ctx: AnalysisContext) -> AnalysisOutput:
        if not paths:
            raise NotAnalysable("no input files")
        loaded = self._load(paths, ctx)
        volume = loaded.volume
        ctx.warnings.extend(loaded.warnings)
        ctx.study_uid = volume.study_instance_uid or ctx.study_uid
        ctx.series_uid = volume.series_instance_uid or ctx.series_uid
        if volume.modality != "MR":
            raise NotAnalysable(f"modality {volume.modality} is not MR")
        with self._stage(ctx, "segment", "vertebral-body segmentation"):
            model = self.model
            seg = segment_bodies(volume, model)
        if not seg.names:
            raise NotAnalysable(
                "no vertebral body found in the field of view (spine not in the scanned region?)"
            )
        obliquity = seg.view.sagittal_obliquity_deg
        if obliquity > self.selection_rules.max_oblique_deg:
            raise NotAnalysable(
                f"not sagittal: slice normal {obliquity:.0f} deg from the left-right axis"
            )
        with self._stage(ctx, "measure", f"measuring {len(seg.names)} bodies"):
            values = [seg.labels.levels[n] for n in seg.names]
            bodies = measure_bodies(
                seg.labels.array, values, volume.geometry, seg.view, self.measure_params
            )
        with self._stage(ctx, "grade", "grading"):
            result = self._result(seg, bodies, model, ctx)
        result.label_map = {n: int(v) for n, v in seg.labels.levels.items()}
        return AnalysisOutput(result=result, volume=volume, labels=seg.labels)

    def _result(
        self, seg: MRSegmentation, bodies: list[BodyHeights], model: BodyModel, ctx: AnalysisContext
    ) -> AnalysisResult:
        rules = self.grading_rules
        heights: list[Heights | None] = [
            None if b.truncated else b.measurement.heights for b in bodies
        ]
        grades = grade_bodies(seg.names, heights, rules)
        confidence = [round(float(seg.labels.confidence.get(n, 0.0)), 3) for n in seg.names]
        naming = [(c, level_uncertain(c, rules)) for c in confidence]
        vertebrae = [
            VertebraResult(
                level=name,
                level_confidence=conf,
                level_uncertain=u,
                label_value=int(b.value),
                centroid_mm=tuple(round(c, 2) for c in b.centroid_mm),  # type: ignore[arg-type]
                trabecular_hu=None,
                heights_mm=h,
                height_loss=g.height_loss,
                morphology=g.morphology,
                genant_grade=g.genant_grade,
                notes=(*b.notes, *b.measurement.notes, *g.notes,
                       *([level_uncertain_note(conf, rules)] if u else [])),
            )
            for name, (conf, u), b, h, g in zip(
                seg.names, naming, bodies, heights, grades, strict=True)
        ]
        graded = [v for v in vertebrae if v.genant_grade is not None]
        vcf = tuple(v.level for v in graded if (v.genant_grade or 0) >= rules.fracture_min_grade)
        findings = Findings(
            osteoporosis_suspected=None,
            l1_hu=None,
            vcf_levels=vcf,
            max_genant_grade=max((v.genant_grade or 0 for v in graded), default=None),
            density_level_uncertain=None,  # no density level on MR
            graded_levels=tuple(v.level for v in graded),
        )
        warnings = [*ctx.warnings, *seg.notes]
        if any(u for _, u in naming):
            warnings.append(level_uncertain_warning(
                [v.level for v in vertebrae if v.level_uncertain], rules))
        warnings.append("MR: no bone density estimate (no Hounsfield units); shape only")
        truncated = [v.level for v, b in zip(vertebrae, bodies, strict=True) if b.truncated]
        if truncated:
            warnings.append(
                "partial coverage: "
                + ", ".join(truncated)
                + " cut by the field of view (heights and grades not assessed)"
            )
        return AnalysisResult(
            status="analysed",
            reason=None,
            modality="MR",
            study_instance_uid=ctx.study_uid,
            series_instance_uid=ctx.series_uid,
            contrast_phase=None,
            model=model.info,
            vertebrae=vertebrae,
            findings=findings,
            timings_s=dict(ctx.timings),
            warnings=warnings,
        )


def create() -> MRAnalyser:
    """Registry factory (``osteo_node.pipeline.registry``)."""
    return MRAnalyser()
