"""Comprehensive 3D SR, TID 1500 Measurement Report (IHE AI Results style), with highdicom.

Content tree::

    Imaging Measurement Report (TID 1500)
      Observation context (device observer = osteo-node), procedure reported (CT / MR)
      Image Library (source images)
      Imaging Measurements
        per vertebra  (TID 1411 Volumetric ROI; TID 1501 when the level has no SEG segment)
          tracking identifier = level + tracking UID, finding site = SNOMED vertebra code,
          algorithm identification (name, version, model sha256 as a parameter),
          referenced segment in the SEG (+ its source images),
          Attenuation Coefficient [hnsf'U] with derivation Mean / Standard Deviation,
          anterior / middle / posterior height (mm), height-loss ratio (1),
          qualitative: Genant grade, morphology, level name uncertain (yes/no; when assessed)
        image level  (TID 1501)
          density (Attenuation Coefficient, Mean) at the density level (L1 or fallback),
          qualitative: osteoporosis suspected (yes/no/unknown), contrast phase, density level
          name uncertain (yes/no; when assessed)
      Qualitative Evaluations: Comment = "Decision support only, not a diagnosis...", then the
        level caveat when level names are uncertain, then one comment per red flag

All codes come from ``dicom_sr_templates/codes.yaml``. :func:`read_report` parses an SR back
into plain values (the round trip the tests check against the AnalysisResult).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import highdicom as hd
import structlog
from highdicom.sr import CodedConcept
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence

from osteo_node.exporters import codes as codes_mod
from osteo_node.exporters.codes import CodeBook
from osteo_node.exporters.common import (
    ExportError,
    ExportSettings,
    apply_common,
    level_caveat,
    require_source,
    source_datasets,
)
from osteo_node.exporters.seg import SegmentMap
from osteo_node.exporters.uids import deterministic_uid
from osteo_node.pipeline.results import AnalysisResult, VertebraResult, relative_index
from osteo_node.pipeline.types import SourceInstance, Volume

log = structlog.get_logger(__name__)

IMAGE_LEVEL_ID = "Image-level findings"
HEIGHT_KEYS = (("anterior", "anterior_height"), ("middle", "middle_height"),
               ("posterior", "posterior_height"))


def algorithm_id(result: AnalysisResult, settings: ExportSettings) -> hd.sr.AlgorithmIdentification:
    """Algorithm identification: the model (name, version, sha256) or the node itself."""
    model = result.model
    if model is None:
        return hd.sr.AlgorithmIdentification(name=settings.model_name,
                                             version=settings.software_version)
    return hd.sr.AlgorithmIdentification(
        name=model.name,
        version=model.version,
        parameters=[f"sha256={model.sha256}", f"execution_provider={model.execution_provider}",
                    f"osteo-node={settings.software_version}"],
    )


def _measurement(name: CodedConcept, value: float, unit: CodedConcept,
                 derivation: CodedConcept | None = None) -> hd.sr.Measurement:
    return hd.sr.Measurement(name=name, value=float(value), unit=unit, derivation=derivation)


def vertebra_measurements(v: VertebraResult, book: CodeBook) -> list[hd.sr.Measurement]:
    """Measurements of one vertebra (algorithm identification is on the group)."""
    out: list[hd.sr.Measurement] = []
    if v.trabecular_hu is not None:
        out.append(_measurement(book.concept("attenuation"), v.trabecular_hu.mean,
                                book.unit("hu"), book.concept("mean")))
        out.append(_measurement(book.concept("attenuation"), v.trabecular_hu.sd,
                                book.unit("hu"), book.concept("standard_deviation")))
    if v.heights_mm is not None:
        for attr, key in HEIGHT_KEYS:
            value = getattr(v.heights_mm, attr)
            if value is not None:
                out.append(_measurement(book.concept(key), value, book.unit("mm")))
    if v.height_loss is not None:
        out.append(_measurement(book.concept("height_loss"), v.height_loss, book.unit("ratio")))
    return out


def vertebra_evaluations(v: VertebraResult, book: CodeBook) -> list[hd.sr.QualitativeEvaluation]:
    out = [hd.sr.QualitativeEvaluation(book.concept("morphology"),
                                       book.get("morphologies", v.morphology).concept())]
    if v.genant_grade is not None:
        out.append(hd.sr.QualitativeEvaluation(book.concept("genant_grade"),
                                               book.get("genant_grades", v.genant_grade).concept()))
    if v.level_uncertain is not None:
        out.append(level_uncertain_evaluation(v.level_uncertain, book))
    return out


def level_uncertain_evaluation(uncertain: bool, book: CodeBook) -> hd.sr.QualitativeEvaluation:
    """CODE "Vertebral level name uncertain" = Yes / No (the tracking identifier keeps the
    level name; this says whether that name is anchored to anatomy)."""
    return hd.sr.QualitativeEvaluation(book.concept("level_uncertain"),
                                       book.get("yes_no", "yes" if uncertain else "no").concept())


def _source_images(kind: type, sources: Sequence[SourceInstance]) -> list[Any]:
    return [kind(referenced_sop_class_uid=s.sop_class_uid,
                 referenced_sop_instance_uid=s.sop_instance_uid) for s in sources]


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
                source_images=_source_images(hd.sr.SourceImageForSegmentation, self.sources),
            )
            return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                referenced_segment=segment, **common)
        return hd.sr.MeasurementsAndQualitativeEvaluations(
            source_images=_source_images(hd.sr.SourceImageForMeasurementGroup, self.sources),
            **common)


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

    def build(self, book: CodeBook) -> hd.sr.MeasurementsAndQualitativeEvaluations:
        f = self.result.findings
        assert f is not None  # checked in __post_init__
        measurements = []
        if f.l1_hu is not None and f.density_level:
            measurements.append(hd.sr.Measurement(
                name=book.concept("attenuation"), value=float(f.l1_hu), unit=book.unit("hu"),
                derivation=book.concept("mean"),
                finding_sites=[hd.sr.FindingSite(book.vertebra(f.density_level))]))
        suspected = {True: "yes", False: "no", None: "unknown"}[f.osteoporosis_suspected]
        evaluations = [hd.sr.QualitativeEvaluation(book.concept("osteoporosis_suspected"),
                                                   book.get("yes_no", suspected).concept())]
        pathological = "yes" if self.red_flags else "no"
        evaluations.append(hd.sr.QualitativeEvaluation(
            book.concept("pathological_fracture_suspected"),
            book.get("yes_no", pathological).concept()))
        phase = self.result.contrast_phase or "unknown"
        if phase not in book.sections["contrast_phases"]:
            log.warning("sr_unknown_contrast_phase", phase=phase)
            phase = "unknown"
        evaluations.append(hd.sr.QualitativeEvaluation(
            book.concept("contrast_phase"), book.get("contrast_phases", phase).concept()))
        if measurements and f.density_level_uncertain is not None:
            evaluations.append(level_uncertain_evaluation(f.density_level_uncertain, book))
        return hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=self.tracking_uid,
                                                         identifier=IMAGE_LEVEL_ID),
            finding_type=book.concept("finding_type_spine"),
            algorithm_id=self.algo,
            measurements=measurements,
            qualitative_evaluations=evaluations,
            source_images=_source_images(hd.sr.SourceImageForMeasurementGroup, self.sources),
        )


def red_flag_reasons(result: AnalysisResult) -> list[str]:
    """Pathological-fracture red flags of the patient assessment built from this result (the
    same assessment the FLS worklist uses; the node has no clinical record of its own)."""
    from osteo_node.clinical.assessment import build_assessment

    if result.status != "analysed":
        return []
    return [f.reason for f in build_assessment(None, None, result.to_json()).red_flags]


def disclaimer_container(text: str, book: CodeBook, red_flags: Sequence[str] = (),
                         caveat: str | None = None) -> hd.sr.ContainerContentItem:
    """Free-text comments: the decision-support disclaimer, the level caveat (uncertain level
    names), then one line per red flag."""
    from osteo_node.clinical.red_flags import action

    container = hd.sr.ContainerContentItem(
        name=book.concept("qualitative_evaluations"),
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
    )
    lines = [text, *([caveat] if caveat else []),
             *(f"Red flag: {r} - {action()}." for r in red_flags)]
    container.ContentSequence = DicomSequence([hd.sr.TextContentItem(
        name=book.concept("comment"), value=line[:1024],
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS) for line in lines])
    return container


@dataclass
class MeasurementReportSR:
    """Builder of the TID 1500 SR for one analysis (validated in the constructor)."""

    result: AnalysisResult
    settings: ExportSettings
    volume: Volume  # with a DICOM header (checked)
    segment_map: SegmentMap | None = None
    seg_dataset: Dataset | None = None
    level_slices: dict[str, list[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.result.status != "analysed":
            raise ExportError("a measurement report needs an analysed result")
        if not self.result.vertebrae:
            raise ExportError("no vertebra in the result")
        require_source(self.volume)
        if (self.segment_map is None) != (self.seg_dataset is None):
            raise ExportError("segment_map and seg_dataset go together")

    def _slices(self, level: str) -> list[SourceInstance]:
        ks = self.level_slices.get(level) or (
            self.segment_map.slices.get(level, []) if self.segment_map else [])
        if not ks:
            return list(self.volume.sources)
        return [self.volume.sources[k] for k in ks]

    def build(self) -> hd.sr.Comprehensive3DSR:
        book = codes_mod.load()
        volume, header = require_source(self.volume)
        s = self.settings
        algo = algorithm_id(self.result, s)
        red_flags = red_flag_reasons(self.result)
        groups: list[Any] = [
            VertebraGroup(v, self._slices(v.level), self.segment_map,
                          s.uids.uid(f"track-{v.level}"), algo).build(book)
            for v in self.result.vertebrae
        ]
        if self.result.findings is not None:
            level = self.result.findings.density_level
            sources = self._slices(level) if level else list(volume.sources)
            groups.append(ImageLevelGroup(self.result, sources, s.uids.uid("track-image"),
                                          algo, red_flags).build(book))
        observer = hd.sr.ObserverContext(
            observer_type=book.concept("device_observer"),
            observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
                uid=deterministic_uid("osteo-node device", "device", s.uids.root),
                name=s.model_name, manufacturer_name=s.manufacturer,
                model_name=s.software_version))
        procedure = "procedure_mr" if volume.modality == "MR" else "procedure_ct"
        slice_datasets = source_datasets(volume, header)
        report = hd.sr.MeasurementReport(
            observation_context=hd.sr.ObservationContext(observer_device_context=observer),
            procedure_reported=book.concept(procedure),
            imaging_measurements=groups,
            title=book.concept("report_title"),
            referenced_images=slice_datasets,
        )
        report[0].ContentSequence.append(
            disclaimer_container(s.disclaimer, book, red_flags, level_caveat(self.result)))
        evidence = list(slice_datasets)
        if self.seg_dataset is not None:
            evidence.append(self.seg_dataset)
        sr = hd.sr.Comprehensive3DSR(
            evidence=evidence,
            content=report[0],
            series_instance_uid=s.series_uid("sr"),
            series_number=int(s.series_numbers["sr"]),
            sop_instance_uid=s.instance_uid("sr"),
            instance_number=1,
            manufacturer=s.manufacturer,
            is_complete=True,
            is_final=False,
            is_verified=False,
            institution_name=s.institution_name,
        )
        apply_common(sr, volume, header, s, "sr")
        scheme = book.private_scheme.identification_item()
        sr.CodingSchemeIdentificationSequence = DicomSequence([scheme])  # type: ignore[assignment]
        return sr


# ---------------------------------------------------------------- parsing back


@dataclass
class ParsedVertebra:
    level: str
    values: dict[str, float] = field(default_factory=dict)  # hu_mean, hu_sd, anterior...
    genant_grade: int | None = None
    morphology: str | None = None
    segment_number: int | None = None
    tracking_uid: str | None = None
    level_uncertain: bool | None = None


@dataclass
class ParsedReport:
    vertebrae: dict[str, ParsedVertebra]
    density_level: str | None
    density_hu: float | None
    osteoporosis_suspected: bool | None
    contrast_phase: str | None
    disclaimer: str | None
    algorithm_name: str | None
    algorithm_version: str | None
    algorithm_parameters: list[str]
    pathological_fracture_suspected: bool | None = None
    density_level_uncertain: bool | None = None
    comments: list[str] = field(default_factory=list)  # all TEXT Comment items, in order


def _yes_no(book: CodeBook, value: Any) -> bool | None:
    return {"yes": True, "no": False}.get(_code_key(book, "yes_no", value))


def _all_texts(items: Any, code: CodedConcept) -> list[str]:
    out: list[str] = []
    for item in items:
        if getattr(item, "ValueType", "") == "TEXT":
            name = item.ConceptNameCodeSequence[0]
            if (name.CodeValue, name.CodingSchemeDesignator) == (code.value,
                                                                 code.scheme_designator):
                out.append(str(item.TextValue))
        if "ContentSequence" in item:
            out.extend(_all_texts(item.ContentSequence, code))
    return out


def _code_key(book: CodeBook, section: str, concept: Any) -> str:
    return book.reverse(section, str(concept.scheme_designator), str(concept.value))


def _measurement_values(group: Any, book: CodeBook) -> dict[str, float]:
    values: dict[str, float] = {}
    for m in group.get_measurements():
        key = _code_key(book, "concepts", m.name)
        if key == "attenuation":
            deriv = m.derivation
            key = "hu_mean" if deriv is not None and _code_key(book, "concepts", deriv) == "mean" \
                else "hu_sd"
        values[key] = float(m.value)
    return values


def _evaluations(group: Any, book: CodeBook) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for e in group.get_qualitative_evaluations():
        out[_code_key(book, "concepts", e.name)] = e.value
    return out


def _texts(group: Any, book: CodeBook, keys: Sequence[str]) -> dict[str, list[str]]:
    """TEXT values of a group's direct children, by concept key."""
    out: dict[str, list[str]] = {k: [] for k in keys}
    for item in group[0].ContentSequence:
        if getattr(item, "ValueType", "") != "TEXT":
            continue
        name = item.ConceptNameCodeSequence[0]
        for k in keys:
            if book.get("concepts", k).matches(str(name.CodingSchemeDesignator),
                                              str(name.CodeValue)):
                out[k].append(str(item.TextValue))
    return out


def read_report(ds: Dataset) -> ParsedReport:
    """Parse a TID 1500 SR written by :class:`MeasurementReportSR` back into values."""
    book = codes_mod.load()
    sr = hd.sr.Comprehensive3DSR.from_dataset(ds)
    content: Any = sr.content
    groups = list(content.get_volumetric_roi_measurement_groups()) + list(
        content.get_image_measurement_groups())
    vertebrae: dict[str, ParsedVertebra] = {}
    density_level = density_hu = suspected = phase = pathological = density_unsure = None
    algo_name = algo_version = None
    algo_params: list[str] = []
    for g in groups:
        ident = g.tracking_identifier
        evals = _evaluations(g, book)
        texts = _texts(g, book, ("algorithm_name", "algorithm_version", "algorithm_parameters"))
        if texts["algorithm_name"]:
            algo_name = texts["algorithm_name"][0]
            versions = texts["algorithm_version"]
            algo_version = versions[0] if versions else None
            algo_params = texts["algorithm_parameters"]
        if ident == IMAGE_LEVEL_ID:
            for m in g.get_measurements():
                density_hu = float(m.value)
                sites = m.finding_sites
                if sites:
                    density_level = _code_key(book, "vertebrae", sites[0].value)
            yn = evals.get("osteoporosis_suspected")
            if yn is not None:
                suspected = _yes_no(book, yn)
            if "contrast_phase" in evals:
                phase = _code_key(book, "contrast_phases", evals["contrast_phase"])
            pathological_yn = evals.get("pathological_fracture_suspected")
            if pathological_yn is not None:
                pathological = _yes_no(book, pathological_yn)
            if "level_uncertain" in evals:
                density_unsure = _yes_no(book, evals["level_uncertain"])
            continue
        site = g.finding_sites[0].value
        if site == book.concept("finding_type_vertebra") and relative_index(str(ident)):
            level = str(ident)  # relative label V1..Vn: generic "Vertebra" site, name in the ID
        else:
            level = _code_key(book, "vertebrae", site)
        pv = ParsedVertebra(level=level, values=_measurement_values(g, book),
                            tracking_uid=g.tracking_uid)
        if "genant_grade" in evals:
            pv.genant_grade = int(_code_key(book, "genant_grades", evals["genant_grade"]))
        if "morphology" in evals:
            pv.morphology = _code_key(book, "morphologies", evals["morphology"])
        if "level_uncertain" in evals:
            pv.level_uncertain = _yes_no(book, evals["level_uncertain"])
        seg_ref = getattr(g, "referenced_segment", None)
        if seg_ref is not None:
            pv.segment_number = int(seg_ref.referenced_segment_numbers[0])
        vertebrae[level] = pv
    comments = _all_texts(ds.ContentSequence, book.concept("comment"))
    return ParsedReport(
        vertebrae=vertebrae, density_level=density_level, density_hu=density_hu,
        osteoporosis_suspected=suspected, contrast_phase=phase,
        disclaimer=comments[0] if comments else None,
        algorithm_name=algo_name, algorithm_version=algo_version,
        algorithm_parameters=algo_params, pathological_fracture_suspected=pathological,
        density_level_uncertain=density_unsure,
        comments=comments)
