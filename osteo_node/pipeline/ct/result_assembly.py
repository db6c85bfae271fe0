"""Result assembly of the CT analysis: grades the measured vertebrae and builds the
:class:`AnalysisResult` (vertebrae list, findings, warnings), or the refusal result."""

from __future__ import annotations

from collections.abc import Sequence

from osteo_node.pipeline.ct.measure_levels import VertebraRecord
from osteo_node.pipeline.ct.phase import PhaseResult
from osteo_node.pipeline.ct.stage_types import AnalysisContext
from osteo_node.pipeline.results import (
    AnalysisResult,
    Findings,
    HeightLine,
    Heights,
    ModelInfo,
    VertebraResult,
)
from osteo_node.pipeline.stages.grade import (
    DensityCall,
    GradingRules,
    ShapeGrade,
    density_call,
    grade_spine,
    level_uncertain,
    level_uncertain_note,
    level_uncertain_warning,
)
from osteo_node.pipeline.types import LabelVolume


def result_for_refusal(
    reason: str, ctx: AnalysisContext, modality: str = "CT"
) -> AnalysisResult:
    return AnalysisResult(
        status="not_analysable", reason=reason, modality=modality,
        study_instance_uid=ctx.study_uid, series_instance_uid=ctx.series_uid,
        contrast_phase=None, model=None, timings_s=dict(ctx.timings), warnings=list(ctx.warnings),
    )


def _vertebra_results(
    records: list[VertebraRecord], heights: dict[str, Heights | None],
    grades: dict[str, ShapeGrade], labels: LabelVolume, rules: GradingRules,
) -> list[VertebraResult]:
    """One :class:`VertebraResult` per measured vertebra (level uncertainty noted)."""
    vertebrae: list[VertebraResult] = []
    for r in records:
        m, g = r.measurement, grades[r.level]
        notes = list(m.notes) + list(g.notes)
        level_conf = round(float(labels.confidence.get(r.level, 0.0)), 3)
        uncertain = level_uncertain(level_conf, rules)
        if uncertain:
            notes.append(level_uncertain_note(level_conf, rules))
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
            height_lines=_reported_lines(m.heights.lines if m.heights else (), heights[r.level]),
        ))
    return vertebrae


def _reported_lines(lines: Sequence[HeightLine], reported: Heights | None
                    ) -> tuple[HeightLine, ...]:
    """The lines of the heights that are reported (a height withheld has no line either)."""
    if reported is None:
        return ()
    return tuple(ln for ln in lines if getattr(reported, ln.name, None) is not None)


def _findings(
    vertebrae: list[VertebraResult], call: DensityCall, rules: GradingRules
) -> Findings:
    unsure = {v.level for v in vertebrae if v.level_uncertain}
    graded = [v for v in vertebrae if v.genant_grade is not None]
    vcf = tuple(v.level for v in graded if v.genant_grade >= rules.fracture_min_grade)  # type: ignore[operator]
    return Findings(
        osteoporosis_suspected=call.osteoporosis_suspected,
        l1_hu=call.measured_hu,
        density_level=call.level,
        density_category=call.category,
        vcf_levels=vcf,
        max_genant_grade=max((v.genant_grade for v in graded), default=None),  # type: ignore[type-var]
        density_level_uncertain=None if call.level is None else call.level in unsure,
        graded_levels=tuple(v.level for v in graded),
    )


def assemble_result(
    records: list[VertebraRecord], labels: LabelVolume, model: ModelInfo | None,
    phase: PhaseResult, ctx: AnalysisContext, *, rules: GradingRules,
) -> AnalysisResult:
    """Grade ``records`` with ``rules`` and assemble the analysed result."""
    heights = {
        r.level: (r.measurement.heights.heights
                  if r.measurement.heights is not None and not r.measurement.heights.truncated
                  else None)
        for r in records
    }
    grades = grade_spine(heights, rules)
    vertebrae = _vertebra_results(records, heights, grades, labels, rules)
    unsure = {v.level for v in vertebrae if v.level_uncertain}
    trab = {r.level: r.measurement.trabecular for r in records}
    truncated = [r.level for r in records if r.measurement.truncated]
    call = density_call(trab, grades, phase.phase, phase.contrast_given, rules,
                        incomplete=truncated)
    graded = [v for v in vertebrae if v.genant_grade is not None]
    findings = _findings(vertebrae, call, rules)
    warnings = list(ctx.warnings)
    warnings.extend(call.notes)
    if not graded:
        warnings.append("no vertebra could be graded (heights not measurable): compression "
                        "fractures were NOT assessed; an empty vcf_levels is not 'no fracture'")
    if unsure:
        warnings.append(level_uncertain_warning(
            [v.level for v in vertebrae if v.level_uncertain], rules))
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
