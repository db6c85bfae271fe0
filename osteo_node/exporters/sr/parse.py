"""Reading a TID 1500 SR written by :class:`MeasurementReportSR` back into plain values (the
round trip the tests check against the AnalysisResult)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import highdicom as hd
from highdicom.sr import CodedConcept
from pydicom.dataset import Dataset

from osteo_node.exporters import codes as codes_mod
from osteo_node.exporters.codes import CodeBook
from osteo_node.exporters.sr.image_level import IMAGE_LEVEL_ID
from osteo_node.pipeline.results import relative_index

ALGORITHM_KEYS = ("algorithm_name", "algorithm_version", "algorithm_parameters")


@dataclass
class ParsedVertebra:
    level: str
    values: dict[str, float] = field(default_factory=dict)  # hu_mean, hu_sd, anterior...
    genant_grade: int | None = None
    morphology: str | None = None
    segment_number: int | None = None
    tracking_uid: str | None = None
    level_uncertain: bool | None = None
    #: the trabecular ROI: (referenced SOP Instance UID, closed polyline (n, 2) column/row)
    roi_region: tuple[str, Any] | None = None
    #: height name -> (2, 3) LPS endpoints of the line it was measured on
    height_lines: dict[str, Any] = field(default_factory=dict)


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


@dataclass
class _ImageLevel:
    """Values of the image-level group."""

    density_level: str | None = None
    density_hu: float | None = None
    osteoporosis_suspected: bool | None = None
    contrast_phase: str | None = None
    pathological_fracture_suspected: bool | None = None
    density_level_uncertain: bool | None = None


@dataclass
class _Algorithm:
    name: str | None = None
    version: str | None = None
    parameters: list[str] = field(default_factory=list)


def _code_key(book: CodeBook, section: str, concept: Any) -> str:
    return book.reverse(section, str(concept.scheme_designator), str(concept.value))


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


def _height_key(m: Any, book: CodeBook) -> str | None:
    """The key "anterior_height" / "middle_height" / "posterior_height" of a (121207, DCM,
    "Height") measurement, from the topographical modifier of its finding site; None for any
    other measurement."""
    if _code_key(book, "concepts", m.name) != "height":
        return None
    for site in m.finding_sites:
        modifier = site.topographical_modifier
        if modifier is not None:
            return f"{_code_key(book, 'height_positions', modifier)}_height"
    raise KeyError("Height measurement without a topographical modifier (anterior / middle / "
                   "posterior)")


def _measurement_values(group: Any, book: CodeBook) -> dict[str, float]:
    values: dict[str, float] = {}
    for m in group.get_measurements():
        key = _height_key(m, book) or _code_key(book, "concepts", m.name)
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


def _read_algorithm(group: Any, book: CodeBook) -> _Algorithm | None:
    """The group's algorithm identification, or None when it has none."""
    texts = _texts(group, book, ALGORITHM_KEYS)
    if not texts["algorithm_name"]:
        return None
    versions = texts["algorithm_version"]
    return _Algorithm(name=texts["algorithm_name"][0],
                      version=versions[0] if versions else None,
                      parameters=texts["algorithm_parameters"])


def _read_image_level(group: Any, evals: dict[str, Any], book: CodeBook,
                      into: _ImageLevel) -> None:
    """Update ``into`` with the values the image-level group holds."""
    for m in group.get_measurements():
        into.density_hu = float(m.value)
        sites = m.finding_sites
        if sites:
            into.density_level = _code_key(book, "vertebrae", sites[0].value)
    if evals.get("osteoporosis_suspected") is not None:
        into.osteoporosis_suspected = _yes_no(book, evals["osteoporosis_suspected"])
    if "contrast_phase" in evals:
        into.contrast_phase = _code_key(book, "contrast_phases", evals["contrast_phase"])
    if evals.get("pathological_fracture_suspected") is not None:
        into.pathological_fracture_suspected = _yes_no(
            book, evals["pathological_fracture_suspected"])
    if "level_uncertain" in evals:
        into.density_level_uncertain = _yes_no(book, evals["level_uncertain"])


def _vertebra_level(group: Any, book: CodeBook) -> str:
    ident = group.tracking_identifier
    site = group.finding_sites[0].value
    if site == book.concept("finding_type_vertebra") and relative_index(str(ident)):
        return str(ident)  # relative label V1..Vn: generic "Vertebra" site, name in the ID
    return _code_key(book, "vertebrae", site)


def _read_vertebra(group: Any, evals: dict[str, Any], book: CodeBook,
                   into: ParsedVertebra | None) -> ParsedVertebra:
    """Merge one of a vertebra's groups (its own, its heights, its trabecular ROI) into
    ``into`` (None: the first group of the level seen)."""
    level = _vertebra_level(group, book)
    pv = into or ParsedVertebra(level=level)
    pv.values.update(_measurement_values(group, book))
    own = str(group.tracking_identifier) == level
    if own:
        pv.tracking_uid = group.tracking_uid
    if "genant_grade" in evals:
        pv.genant_grade = int(_code_key(book, "genant_grades", evals["genant_grade"]))
    if "morphology" in evals:
        pv.morphology = _code_key(book, "morphologies", evals["morphology"])
    if "level_uncertain" in evals:
        pv.level_uncertain = _yes_no(book, evals["level_uncertain"])
    seg_ref = getattr(group, "referenced_segment", None)
    if seg_ref is not None:
        pv.segment_number = int(seg_ref.referenced_segment_numbers[0])
    for m in group.get_measurements():
        key = _height_key(m, book)
        coords = m.referenced_coordinates
        if key and coords:
            pv.height_lines[key.removesuffix("_height")] = coords[0].value
    roi = getattr(group, "roi", None)
    if roi is not None:
        ref = roi.ContentSequence[0].ReferencedSOPSequence[0]
        pv.roi_region = (str(ref.ReferencedSOPInstanceUID), roi.value)
    return pv


def read_report(ds: Dataset) -> ParsedReport:
    """Parse a TID 1500 SR written by :class:`MeasurementReportSR` back into values."""
    book = codes_mod.load()
    sr = hd.sr.Comprehensive3DSR.from_dataset(ds)
    content: Any = sr.content
    groups = (list(content.get_volumetric_roi_measurement_groups())
              + list(content.get_planar_roi_measurement_groups())
              + list(content.get_image_measurement_groups()))
    vertebrae: dict[str, ParsedVertebra] = {}
    image = _ImageLevel()
    algo = _Algorithm()
    for g in groups:
        evals = _evaluations(g, book)
        algo = _read_algorithm(g, book) or algo
        if g.tracking_identifier == IMAGE_LEVEL_ID:
            _read_image_level(g, evals, book, image)
            continue
        level = _vertebra_level(g, book)
        vertebrae[level] = _read_vertebra(g, evals, book, vertebrae.get(level))
    comments = _all_texts(ds.ContentSequence, book.concept("comment"))
    return ParsedReport(
        vertebrae=vertebrae, density_level=image.density_level, density_hu=image.density_hu,
        osteoporosis_suspected=image.osteoporosis_suspected, contrast_phase=image.contrast_phase,
        disclaimer=comments[0] if comments else None,
        algorithm_name=algo.name, algorithm_version=algo.version,
        algorithm_parameters=algo.parameters,
        pathological_fracture_suspected=image.pathological_fracture_suspected,
        density_level_uncertain=image.density_level_uncertain,
        comments=comments)
