"""Per-vertebra measurement group: TID 1411 Volumetric ROI referencing the SEG segment, or
TID 1501 (source images only) when the level has no segment."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import highdicom as hd

from osteo_node.exporters.codes import CodeBook
from osteo_node.exporters.common import ExportError
from osteo_node.exporters.seg import SegmentMap
from osteo_node.exporters.sr.content import level_uncertain_evaluation, measurement, source_images
from osteo_node.pipeline.results import VertebraResult
from osteo_node.pipeline.types import SourceInstance

HEIGHT_KEYS = (("anterior", "anterior_height"), ("middle", "middle_height"),
               ("posterior", "posterior_height"))


def vertebra_measurements(v: VertebraResult, book: CodeBook) -> list[hd.sr.Measurement]:
    """Measurements of one vertebra (algorithm identification is on the group)."""
    out: list[hd.sr.Measurement] = []
    if v.trabecular_hu is not None:
        out.append(measurement(book.concept("attenuation"), v.trabecular_hu.mean,
                               book.unit("hu"), book.concept("mean")))
        out.append(measurement(book.concept("attenuation"), v.trabecular_hu.sd,
                               book.unit("hu"), book.concept("standard_deviation")))
    if v.heights_mm is not None:
        for attr, key in HEIGHT_KEYS:
            value = getattr(v.heights_mm, attr)
            if value is not None:
                out.append(measurement(book.concept(key), value, book.unit("mm")))
    if v.height_loss is not None:
        out.append(measurement(book.concept("height_loss"), v.height_loss, book.unit("ratio")))
    return out


def vertebra_evaluations(v: VertebraResult, book: CodeBook) -> list[hd.sr.QualitativeEvaluation]:
    """Morphology, Genant grade (when graded) and level-name uncertainty (when assessed)."""
    out = [hd.sr.QualitativeEvaluation(book.concept("morphology"),
                                       book.get("morphologies", v.morphology).concept())]
    if v.genant_grade is not None:
        out.append(hd.sr.QualitativeEvaluation(book.concept("genant_grade"),
                                               book.get("genant_grades", v.genant_grade).concept()))
    if v.level_uncertain is not None:
        out.append(level_uncertain_evaluation(v.level_uncertain, book))
    return out


@dataclass(frozen=True)
class VertebraGroup:
    """TID 1411 (or TID 1501 without a segment) measurement group of one vertebra."""

    vertebra: VertebraResult
    sources: Sequence[SourceInstance]  # slices through this vertebra
    segment_map: SegmentMap | None
    tracking_uid: str
    algo: hd.sr.AlgorithmIdentification

    def __post_init__(self) -> None:
        if not self.sources:
            raise ExportError(f"{self.vertebra.level}: no source image to reference")

    def build(self, book: CodeBook) -> Any:
        v = self.vertebra
        common: dict[str, Any] = dict(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=self.tracking_uid,
                                                         identifier=v.level),
            finding_type=book.concept("finding_type_vertebra"),
            algorithm_id=self.algo,
            finding_sites=[hd.sr.FindingSite(book.vertebra(v.level))],
            measurements=vertebra_measurements(v, book),
            qualitative_evaluations=vertebra_evaluations(v, book),
        )
        number = self.segment_map.number(v.level) if self.segment_map else None
        if self.segment_map is not None and number is not None:
            segment = hd.sr.ReferencedSegment(
                sop_class_uid=self.segment_map.sop_class_uid,
                sop_instance_uid=self.segment_map.sop_instance_uid,
                segment_number=number,
                source_images=source_images(hd.sr.SourceImageForSegmentation, self.sources),
            )
            return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                referenced_segment=segment, **common)
        return hd.sr.MeasurementsAndQualitativeEvaluations(
            source_images=source_images(hd.sr.SourceImageForMeasurementGroup, self.sources),
            **common)
