"""Image-level measurement group (TID 1501): the density at the density level, the
osteoporosis flag, the pathological-fracture flag, the contrast phase and whether the density
level's name is uncertain."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import highdicom as hd
import structlog

from osteo_node.exporters.codes import CodeBook
from osteo_node.exporters.common import ExportError
from osteo_node.exporters.sr.content import level_uncertain_evaluation, source_images
from osteo_node.pipeline.results import AnalysisResult, Findings
from osteo_node.pipeline.types import SourceInstance

log = structlog.get_logger(__name__)

IMAGE_LEVEL_ID = "Image-level findings"


def density_measurements(f: Findings, book: CodeBook) -> list[hd.sr.Measurement]:
    """Attenuation Coefficient (Mean) at the density level, when measured."""
    if f.l1_hu is None or not f.density_level:
        return []
    return [hd.sr.Measurement(
        name=book.concept("attenuation"), value=float(f.l1_hu), unit=book.unit("hu"),
        derivation=book.concept("mean"),
        finding_sites=[hd.sr.FindingSite(book.vertebra(f.density_level))])]


def contrast_phase_key(phase: str | None, book: CodeBook) -> str:
    """The coded contrast phase; "unknown" (logged) for a phase the code book lacks."""
    key = phase or "unknown"
    if key not in book.sections["contrast_phases"]:
        log.warning("sr_unknown_contrast_phase", phase=key)
        key = "unknown"
    return key


@dataclass(frozen=True)
class ImageLevelGroup:
    """TID 1501 group with the density call, the osteoporosis flag, the contrast phase and
    whether red flags suggest a pathological fracture."""

    result: AnalysisResult
    sources: Sequence[SourceInstance]
    tracking_uid: str
    algo: hd.sr.AlgorithmIdentification
    red_flags: Sequence[str] = ()

    def __post_init__(self) -> None:
        if self.result.findings is None:
            raise ExportError("image-level group needs findings")
        if not self.sources:
            raise ExportError("image-level group: no source image to reference")

    def _evaluations(self, f: Findings, measured: bool,
                     book: CodeBook) -> list[hd.sr.QualitativeEvaluation]:
        suspected = {True: "yes", False: "no", None: "unknown"}[f.osteoporosis_suspected]
        pathological = "yes" if self.red_flags else "no"
        phase = contrast_phase_key(self.result.contrast_phase, book)
        evaluations = [
            hd.sr.QualitativeEvaluation(book.concept("osteoporosis_suspected"),
                                        book.get("yes_no", suspected).concept()),
            hd.sr.QualitativeEvaluation(book.concept("pathological_fracture_suspected"),
                                        book.get("yes_no", pathological).concept()),
            hd.sr.QualitativeEvaluation(book.concept("contrast_phase"),
                                        book.get("contrast_phases", phase).concept()),
        ]
        if measured and f.density_level_uncertain is not None:
            evaluations.append(level_uncertain_evaluation(f.density_level_uncertain, book))
        return evaluations

    def build(self, book: CodeBook) -> hd.sr.MeasurementsAndQualitativeEvaluations:
        f = self.result.findings
        assert f is not None  # checked in __post_init__
        measurements = density_measurements(f, book)
        return hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=self.tracking_uid,
                                                         identifier=IMAGE_LEVEL_ID),
            finding_type=book.concept("finding_type_spine"),
            algorithm_id=self.algo,
            measurements=measurements,
            qualitative_evaluations=self._evaluations(f, bool(measurements), book),
            source_images=source_images(hd.sr.SourceImageForMeasurementGroup, self.sources),
        )
