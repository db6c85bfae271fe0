"""What every exported object shares: the original study, the patient, the node as equipment.

- :class:`ExportSettings`: manufacturer, software version, series numbers and descriptions
  (one object per series kind), the UID factory of the job.
- :func:`source_datasets`: one lightweight pydicom Dataset per source slice of a Volume (header
  attributes + that slice's SOP Instance UID and position from the volume geometry), used as
  evidence / source images by highdicom without re-reading the files.
- :func:`apply_common`: copies the patient and study modules from the source header onto an
  exported object and sets the series-level attributes, so each object lands in the ORIGINAL
  study with the same patient.
- :func:`sanitized_header`: the source header with every value valid for its VR (what the
  builders copy from).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import structlog
from pydicom import config
from pydicom.dataset import Dataset
from pydicom.errors import BytesLengthException
from pydicom.multival import MultiValue
from pydicom.valuerep import validate_value

from osteo_node import DISCLAIMER, __version__
from osteo_node.exporters.uids import UidFactory
from osteo_node.pipeline.results import AnalysisResult, Findings, VertebraResult
from osteo_node.pipeline.types import LabelVolume, Volume

log = structlog.get_logger(__name__)

MANUFACTURER = "osteo-node"
KINDS = ("sr", "seg", "sc", "kos")

PATIENT_ATTRS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex")
PATIENT_OPTIONAL = ("IssuerOfPatientID", "PatientAge", "PatientWeight", "PatientSize")
STUDY_ATTRS = ("StudyDate", "StudyTime", "AccessionNumber", "ReferringPhysicianName", "StudyID")
STUDY_OPTIONAL = ("StudyDescription",)

DEFAULT_SERIES_NUMBERS: dict[str, int] = {"sr": 9901, "seg": 9902, "sc": 9903, "kos": 9904}
DEFAULT_DESCRIPTIONS: dict[str, str] = {
    "sr": "osteo-node vertebral measurements (SR, decision support)",
    "seg": "osteo-node vertebra segmentation (decision support)",
    "sc": "osteo-node sagittal overview (decision support)",
    "kos": "osteo-node key images (decision support)",
}


class ExportError(ValueError):
    """The analysis output cannot be turned into DICOM objects; the message says why."""


@dataclass(frozen=True)
class ExportSettings:
    uids: UidFactory
    manufacturer: str = MANUFACTURER
    software_version: str = __version__
    model_name: str = "osteo-node"
    device_serial_number: str = "1"
    institution_name: str | None = None
    series_numbers: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_SERIES_NUMBERS))
    descriptions: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_DESCRIPTIONS))
    disclaimer: str = DISCLAIMER

    def __post_init__(self) -> None:
        for kind in KINDS:
            if kind not in self.series_numbers or kind not in self.descriptions:
                raise ValueError(f"series number and description needed for {kind!r}")
            if not 1 <= int(self.series_numbers[kind]) <= 2**31 - 1:
                raise ValueError(f"series number for {kind!r} out of range")
            if len(self.descriptions[kind]) > 64:
                raise ValueError(f"series description for {kind!r} longer than 64 characters")

    def series_uid(self, kind: str) -> str:
        return self.uids.uid(f"{kind}-series")

    def instance_uid(self, kind: str) -> str:
        return self.uids.uid(f"{kind}-instance")


def require_source(volume: Volume | None) -> tuple[Volume, Dataset]:
    """The volume and its DICOM header; refuse NIfTI input (no study to add objects to)."""
    if volume is None:
        raise ExportError("no image volume in the analysis output")
    header = volume.header
    if not isinstance(header, Dataset):
        raise ExportError("the volume has no DICOM header (NIfTI input): no study to export into")
    if not volume.study_instance_uid or not volume.series_instance_uid:
        raise ExportError("the volume has no Study/Series Instance UID")
    if len(volume.sources) != volume.array.shape[0]:
        raise ExportError(
            f"volume has {volume.array.shape[0]} slices but {len(volume.sources)} source "
            "instances; references to source images need one instance per slice"
        )
    if any(not s.sop_instance_uid or not s.sop_class_uid for s in volume.sources):
        raise ExportError("a source instance has an empty SOP Class/Instance UID")
    return volume, header


def safe_get(header: Dataset, keyword: str) -> Any:
    """``header.get(keyword)``, or None (with a warning naming only the keyword) when the
    element is malformed in the source."""
    try:
        return header.get(keyword)
    except (ValueError, TypeError, BytesLengthException):
        log.warning("export_header_element_dropped", keyword=keyword)
        return None


def _copy(dst: Dataset, src: Dataset, keywords: tuple[str, ...], *, type2: bool) -> None:
    for kw in keywords:
        value = safe_get(src, kw)
        if value is not None and value != "":
            setattr(dst, kw, value)
        elif type2:
            setattr(dst, kw, "")


def public_attributes(header: Dataset) -> Dataset:
    """Deep copy of the header's public, non-pixel attributes. Private elements are skipped
    WITHOUT decoding them (vendors' private tags are often malformed) and a public element
    that cannot be decoded is dropped with a warning instead of failing the export."""
    base = Dataset()
    for tag in list(header.keys()):
        if tag.is_private or tag.group in (0x7FE0, 0x0002):
            continue
        try:
            elem = header[tag]
        except (ValueError, TypeError, BytesLengthException) as exc:
            log.warning("export_header_element_dropped", tag=str(tag), error=type(exc).__name__)
            continue
        base.add(copy.deepcopy(elem))
    return base


_ISO_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
_ISO_TIME = re.compile(r"^(\d{2}):(\d{2})(?::(\d{2})(\.\d{1,6})?)?$")


def _normalised(vr: str, value: Any) -> str | None:
    """A common non-standard spelling turned into the VR's own (ISO dates and times)."""
    text = str(value).strip()
    if vr == "DA" and (m := _ISO_DATE.match(text)):
        return "".join(m.groups())
    if vr == "TM" and (m := _ISO_TIME.match(text)):
        return "".join(g or "" for g in m.groups())
    return None


CHECKED_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "LO", "LT", "PN", "SH", "ST", "TM", "UI"})


def _valid(vr: str, value: Any) -> bool:
    """Text values checked against their VR (numbers were already parsed by pydicom)."""
    if vr not in CHECKED_VRS:
        return True
    values = list(value) if isinstance(value, MultiValue) else [value]
    try:
        for v in values:
            validate_value(vr, str(v), config.RAISE)
    except (ValueError, TypeError):
        return False
    return True


def sanitized_header(header: Dataset) -> Dataset:
    """The source header's public attributes with every value checked against its VR, so one
    non-standard value (``PatientBirthDate = '1951-03-09'``, common in real data) cannot stop
    an export: ISO dates and times are rewritten (19510309), other invalid values emptied
    (valid for the type 2 patient and study attributes the builders copy). Only the keyword is
    logged, never the value (patient data)."""
    out = public_attributes(header)
    for elem in list(out):
        if elem.VR == "SQ" or elem.value is None or elem.value == "":
            continue
        if _valid(elem.VR, elem.value):
            continue
        fixed = _normalised(elem.VR, elem.value)
        if fixed is not None and _valid(elem.VR, fixed):
            elem.value = fixed
            log.warning("export_header_value_normalised", keyword=elem.keyword, vr=elem.VR)
        else:
            elem.value = ""
            log.warning("export_header_value_dropped", keyword=elem.keyword, vr=elem.VR)
    return out


def source_datasets(volume: Volume, header: Dataset) -> list[Dataset]:
    """One Dataset per slice (k order): header attributes with this slice's identity/position."""
    geo = volume.geometry
    m = geo.matrix
    iop = [float(v) for v in (*m[:, 0], *m[:, 1])]
    _nk, nj, ni = volume.array.shape
    base = public_attributes(header)
    out: list[Dataset] = []
    for k, src in enumerate(volume.sources):
        ds = copy.deepcopy(base)
        ds.SOPClassUID = src.sop_class_uid
        ds.SOPInstanceUID = src.sop_instance_uid
        ds.StudyInstanceUID = volume.study_instance_uid
        ds.SeriesInstanceUID = volume.series_instance_uid
        ds.ImagePositionPatient = [round(float(v), 6) for v in geo.index_to_lps((0.0, 0.0, k))]
        ds.ImageOrientationPatient = [round(v, 8) for v in iop]
        ds.PixelSpacing = [round(geo.spacing[1], 8), round(geo.spacing[0], 8)]
        ds.Rows, ds.Columns = nj, ni
        # spacing from the positions, never the header's (some scanners write it negative)
        ds.SpacingBetweenSlices = round(float(geo.spacing[2]), 6)
        ds.InstanceNumber = k + 1
        out.append(ds)
    return out


def apply_common(
    ds: Dataset, volume: Volume, header: Dataset, settings: ExportSettings, kind: str
) -> Dataset:
    """Patient + study modules from the source, series/equipment attributes of the node."""
    _copy(ds, header, PATIENT_ATTRS, type2=True)
    _copy(ds, header, PATIENT_OPTIONAL, type2=False)
    _copy(ds, header, STUDY_ATTRS, type2=True)
    _copy(ds, header, STUDY_OPTIONAL, type2=False)
    ds.StudyInstanceUID = volume.study_instance_uid
    ds.Manufacturer = settings.manufacturer
    ds.ManufacturerModelName = settings.model_name
    ds.SoftwareVersions = settings.software_version
    ds.SeriesDescription = settings.descriptions[kind]
    ds.SeriesNumber = int(settings.series_numbers[kind])
    if settings.institution_name:
        ds.InstitutionName = settings.institution_name
    return ds


def slice_indices(mask: np.ndarray[Any, Any]) -> list[int]:
    """Slice indices k where a [k, j, i] mask has voxels."""
    return [int(k) for k in np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1))]


# ---------------------------------------------------------------- uncertain level names
# Every output (SC, KOS, SR comment, FLS worklist, FHIR) shows an uncertain level name the same
# way. Whether a name IS uncertain is decided once, by the analyser
# (osteo_node.pipeline.stages.grade.level_uncertain); these helpers only display it.

UNCERTAIN_MARK = "?"
LEVEL_CAVEAT = ("Level names marked ? are uncertain (not anchored to a reliable landmark); "
                "count the levels on the images")


def shown_level(level: str, uncertain: bool | None) -> str:
    """``"L1?"`` for an uncertain name, ``"L1"`` otherwise."""
    return f"{level}{UNCERTAIN_MARK}" if uncertain else level


def vertebra_level(v: VertebraResult) -> str:
    return shown_level(v.level, v.level_uncertain)


def density_level(f: Findings) -> str | None:
    """The density level as shown (``"L1?"`` when named by assumption); None without one."""
    return shown_level(f.density_level, f.density_level_uncertain) if f.density_level else None


def uncertain_levels(result: AnalysisResult) -> list[str]:
    """Levels of the result whose names are uncertain (head to feet as in the result)."""
    levels = [v.level for v in result.vertebrae if v.level_uncertain]
    f = result.findings
    if f is not None and f.density_level_uncertain and f.density_level not in levels:
        levels.append(str(f.density_level))
    return levels


def level_caveat(result: AnalysisResult, drawn: Sequence[str] = ()) -> str | None:
    """The caveat line for a result with uncertain level names (None when all are anchored).

    ``drawn``: further uncertain names an image shows (labels the result does not report)."""
    levels = uncertain_levels(result)
    levels += [lv for lv in drawn if lv not in levels]
    return f"{LEVEL_CAVEAT} ({', '.join(levels)})" if levels else None


def label_level(level: str, result: AnalysisResult, labels: LabelVolume | None) -> str:
    """Name of a labelled vertebra as drawn on an image: the result's decision for a reported
    vertebra; for a label the result does not report (e.g. outside T4-L5) the same rule on the
    label's confidence, when the analyser assessed level names at all."""
    for v in result.vertebrae:
        if v.level == level:
            return vertebra_level(v)
    if labels is None or all(v.level_uncertain is None for v in result.vertebrae):
        return level
    from osteo_node.pipeline.stages.grade import GradingRules, level_uncertain

    rules = GradingRules.default()
    return shown_level(level, level_uncertain(labels.confidence.get(level, 0.0), rules))
