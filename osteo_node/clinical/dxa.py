"""DXA results intake: DICOM SR, FHIR R4 Observations, and a documented CSV / JSON format.

Everything is normalised to a :class:`DxaExam`: per site (``lumbar_spine``, ``femoral_neck``,
``total_hip``, ``radius_33``) the T-score, Z-score and areal BMD, plus per-level values for the
lumbar spine (L1..L4) when the source has them.

CSV format (header required, one row per site or spine level; empty cells = not measured)::

    site,level,t_score,z_score,bmd_g_cm2,laterality
    lumbar_spine,,-2.1,-1.0,0.912,
    lumbar_spine,L1,-2.0,,0.880,
    femoral_neck,,-1.6,-0.4,0.701,left

JSON format: ``{"sites": {SITE: {"t_score", "z_score", "bmd_g_cm2", "laterality",
"levels": {"L1": {"t_score", "z_score", "bmd_g_cm2"}}}}}`` or ``{"rows": [CSV-like rows]}``.
A FHIR R4 Bundle / Observation / DiagnosticReport with contained Observations is also accepted
(LOINC DXA codes from ``clinical_codes.yaml``).

DICOM: any SR (Comprehensive / Enhanced / Basic Text) whose NUM content items are coded with
the LOINC DXA codes, or whose concept names say "T-score" / "Z-score" / "BMD" inside a container
or with a finding-site modifier naming the region (vendor exports do both).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from osteo_node.clinical.codes import system_kind
from osteo_node.clinical_data import load

SITES: tuple[str, ...] = ("lumbar_spine", "femoral_neck", "total_hip", "radius_33")
SPINE_LEVELS: tuple[str, ...] = ("L1", "L2", "L3", "L4")
KINDS: tuple[str, ...] = ("t_score", "z_score", "bmd_g_cm2")


class DxaInputError(ValueError):
    """The DXA input could not be read (the message says why)."""


@dataclass(frozen=True)
class LevelMeasurement:
    level: str
    t_score: float | None = None
    z_score: float | None = None
    bmd_g_cm2: float | None = None


@dataclass(frozen=True)
class SiteMeasurement:
    site: str
    t_score: float | None = None
    z_score: float | None = None
    bmd_g_cm2: float | None = None
    laterality: str | None = None
    levels: tuple[LevelMeasurement, ...] = ()


@dataclass
class DxaExam:
    sites: dict[str, SiteMeasurement] = field(default_factory=dict)
    source: str = ""
    warnings: list[str] = field(default_factory=list)

    def is_empty(self) -> bool:
        return not self.sites


# --------------------------------------------------------------------------- helpers


def _num(value: Any) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


class _Collector:
    """Accumulates (site, level, laterality, kind, value) observations into a DxaExam."""

    def __init__(self, source: str) -> None:
        self.values: dict[tuple[str, str | None, str | None], dict[str, float]] = {}
        self.warnings: list[str] = []
        self.source = source

    def add(
        self, site: str, kind: str, value: float | None, level: str | None = None,
        laterality: str | None = None,
    ) -> None:
        if site not in SITES:
            self.warnings.append(f"unknown DXA site {site!r} ignored")
            return
        if kind not in KINDS:
            self.warnings.append(f"unknown DXA value kind {kind!r} ignored")
            return
        if value is None:
            return
        level = level.upper() if level else None
        if level is not None and (site != "lumbar_spine" or level not in SPINE_LEVELS):
            self.warnings.append(f"level {level!r} at {site} ignored (only L1-L4 of the spine)")
            return
        self.values.setdefault((site, level, laterality), {})[kind] = value

    def exam(self) -> DxaExam:
        sites: dict[str, SiteMeasurement] = {}
        warnings = list(self.warnings)
        for site in SITES:
            totals = [(lat, v) for (s, lvl, lat), v in self.values.items() if s == site and not lvl]
            levels = tuple(
                LevelMeasurement(lvl, v.get("t_score"), v.get("z_score"), v.get("bmd_g_cm2"))
                for lvl in SPINE_LEVELS
                for (s, lv, _), v in self.values.items()
                if s == site and lv == lvl
            )
            if not totals and not levels:
                continue
            chosen = _lowest_side(totals)
            if len(totals) > 1:
                warnings.append(
                    f"{site}: {len(totals)} sides measured; the lower T-score side is used"
                )
            lat, vals = chosen if chosen else (None, {})
            sites[site] = SiteMeasurement(
                site, vals.get("t_score"), vals.get("z_score"), vals.get("bmd_g_cm2"), lat, levels
            )
        return DxaExam(sites, self.source, warnings)


def _lowest_side(
    totals: list[tuple[str | None, dict[str, float]]],
) -> tuple[str | None, dict[str, float]] | None:
    if not totals:
        return None

    def key(item: tuple[str | None, dict[str, float]]) -> float:
        v = item[1]
        score = v.get("t_score", v.get("z_score"))
        return score if score is not None else math.inf

    return min(totals, key=key)


# --------------------------------------------------------------------------- CSV / JSON


def _rows_into(col: _Collector, rows: Iterable[Mapping[str, Any]]) -> None:
    for n, row in enumerate(rows, start=1):
        site = str(row.get("site") or "").strip().lower()
        if not site:
            col.warnings.append(f"row {n}: no site; ignored")
            continue
        level = str(row.get("level") or "").strip() or None
        lat = str(row.get("laterality") or "").strip().lower() or None
        for kind in KINDS:
            raw = row.get(kind)
            value = _num(raw)
            if raw not in (None, "") and value is None:
                col.warnings.append(f"row {n}: {kind}={raw!r} is not a number; ignored")
            col.add(site, kind, value, level, lat)


def read_csv(path: Path) -> DxaExam:
    col = _Collector(f"csv:{path.name}")
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or "site" not in reader.fieldnames:
            raise DxaInputError(f"{path}: CSV needs a header with a 'site' column")
        _rows_into(col, reader)
    return col.exam()


def from_json_document(doc: Any, source: str) -> DxaExam:
    """Our documented JSON, or any FHIR R4 resource holding DXA Observations."""
    if isinstance(doc, dict) and "resourceType" in doc:
        return from_fhir_resources(iter_fhir_resources(doc), source)
    col = _Collector(source)
    if isinstance(doc, dict) and isinstance(doc.get("rows"), list):
        _rows_into(col, [r for r in doc["rows"] if isinstance(r, dict)])
    elif isinstance(doc, dict) and isinstance(doc.get("sites"), dict):
        for site, entry in doc["sites"].items():
            if not isinstance(entry, dict):
                col.warnings.append(f"site {site!r}: expected an object; ignored")
                continue
            lat = entry.get("laterality")
            for kind in KINDS:
                col.add(str(site), kind, _num(entry.get(kind)), None, lat)
            for level, lv in (entry.get("levels") or {}).items():
                if isinstance(lv, dict):
                    for kind in KINDS:
                        col.add(str(site), kind, _num(lv.get(kind)), str(level), lat)
    else:
        raise DxaInputError(f"{source}: JSON must hold 'sites', 'rows' or a FHIR resource")
    return col.exam()


# --------------------------------------------------------------------------- FHIR


def iter_fhir_resources(doc: Mapping[str, Any]) -> Iterable[Mapping[str, Any]]:
    """Resources in a Bundle (entries), a resource's contained list, and the resource itself."""
    rtype = doc.get("resourceType")
    if rtype == "Bundle":
        for entry in doc.get("entry") or []:
            res = entry.get("resource") if isinstance(entry, dict) else None
            if isinstance(res, dict):
                yield from iter_fhir_resources(res)
        return
    yield doc
    for res in doc.get("contained") or []:
        if isinstance(res, dict):
            yield res


def from_fhir_resources(resources: Iterable[Mapping[str, Any]], source: str) -> DxaExam:
    table: dict[str, dict[str, str]] = load("clinical_codes")["dxa_loinc"]
    col = _Collector(source)
    for res in resources:
        if res.get("resourceType") != "Observation":
            continue
        if res.get("status") in ("entered-in-error", "cancelled"):
            continue
        code = res.get("code")
        codings = code.get("coding") if isinstance(code, Mapping) else None
        if code is not None and not isinstance(codings, list):
            col.warnings.append(f"Observation {res.get('id', '?')}: malformed code; skipped")
            continue
        for coding in codings or []:
            if not isinstance(coding, Mapping) or system_kind(coding.get("system")) != "loinc":
                continue
            spec = table.get(str(coding.get("code")))
            if spec is None:
                continue
            vq = res.get("valueQuantity")
            value = _num(vq.get("value")) if isinstance(vq, Mapping) else None
            if value is None:
                col.warnings.append(
                    f"Observation {res.get('id', '?')} ({coding.get('code')}): no numeric value"
                )
                break
            col.add(spec["site"], _kind(spec["kind"]), value, None, spec.get("laterality"))
            break
    return col.exam()


def _kind(kind: str) -> str:
    return "bmd_g_cm2" if kind == "bmd" else kind


# --------------------------------------------------------------------------- DICOM SR

_SITE_WORDS: tuple[tuple[str, str], ...] = (
    ("femoral neck", "femoral_neck"), ("neck", "femoral_neck"),
    ("total hip", "total_hip"), ("total femur", "total_hip"), ("hip", "total_hip"),
    ("33%", "radius_33"), ("one-third", "radius_33"), ("1/3", "radius_33"),
    ("radius", "radius_33"), ("forearm", "radius_33"),
    ("l1-l4", "lumbar_spine"), ("l1 - l4", "lumbar_spine"), ("lumbar", "lumbar_spine"),
    ("spine", "lumbar_spine"), ("ap spine", "lumbar_spine"),
)


def _site_from_text(text: str) -> tuple[str | None, str | None]:
    t = text.lower()
    for level in SPINE_LEVELS:
        if t.strip() == level.lower() or t.strip() == f"{level.lower()} vertebra":
            return "lumbar_spine", level
    for word, site in _SITE_WORDS:
        if word in t:
            return site, None
    return None, None


def _kind_from_text(text: str) -> str | None:
    t = text.lower().replace(" ", "").replace("_", "-")
    if "t-score" in t or "tscore" in t:
        return "t_score"
    if "z-score" in t or "zscore" in t:
        return "z_score"
    if "bmd" in t or "bonemineraldensity" in t or "mass/area" in t:
        return "bmd_g_cm2"
    return None


def _concept(item: Any) -> tuple[str, str, str]:
    seq = getattr(item, "ConceptNameCodeSequence", None)
    if not seq:
        return "", "", ""
    c = seq[0]
    return (str(getattr(c, "CodeValue", "")), str(getattr(c, "CodingSchemeDesignator", "")),
            str(getattr(c, "CodeMeaning", "")))


def _code_value_meaning(item: Any) -> str:
    seq = getattr(item, "ConceptCodeSequence", None)
    return str(getattr(seq[0], "CodeMeaning", "")) if seq else ""


def _sr_context(item: Any) -> tuple[str | None, str | None]:
    """Site/level named by a CONTAINER title, a TEXT or a CODE (finding site) item."""
    vt = str(getattr(item, "ValueType", ""))
    _, _, meaning = _concept(item)
    if vt == "CONTAINER":
        return _site_from_text(meaning)
    if vt == "CODE" and ("site" in meaning.lower() or "region" in meaning.lower()):
        return _site_from_text(_code_value_meaning(item))
    if vt == "TEXT" and ("site" in meaning.lower() or "region" in meaning.lower()):
        return _site_from_text(str(getattr(item, "TextValue", "")))
    return None, None


def _walk_sr(items: Any, col: _Collector, site: str | None, level: str | None) -> None:
    table: dict[str, dict[str, str]] = load("clinical_codes")["dxa_loinc"]
    items = list(items or [])
    # Siblings may name the site (finding-site modifiers) for their NUM neighbours.
    for it in items:
        if str(getattr(it, "ValueType", "")) != "CONTAINER":
            s, lv = _sr_context(it)
            site, level = s or site, lv or level
    for it in items:
        vt = str(getattr(it, "ValueType", ""))
        code, scheme, meaning = _concept(it)
        if vt == "CONTAINER":
            s, lv = _sr_context(it)
            _walk_sr(getattr(it, "ContentSequence", None), col, s or site, lv or level)
            continue
        if vt != "NUM":
            continue
        mv = getattr(it, "MeasuredValueSequence", None)
        value = _num(getattr(mv[0], "NumericValue", None)) if mv else None
        child_site, child_level = site, level
        for child in getattr(it, "ContentSequence", None) or []:
            s, lv = _sr_context(child)
            child_site, child_level = s or child_site, lv or child_level
        spec = table.get(code) if scheme.upper() in ("LN", "LOINC") else None
        if spec is not None:
            col.add(spec["site"], _kind(spec["kind"]), value, child_level, spec.get("laterality"))
            continue
        kind = _kind_from_text(meaning)
        text_site, text_level = _site_from_text(meaning)
        final_site = text_site or child_site
        if kind and final_site:
            col.add(final_site, kind, value, text_level or child_level)


def read_dicom_sr(path: Path) -> DxaExam:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path)
    except (InvalidDicomError, OSError) as exc:
        raise DxaInputError(f"{path}: not a readable DICOM file ({exc})") from exc
    if str(getattr(ds, "Modality", "")) != "SR" or "ContentSequence" not in ds:
        raise DxaInputError(
            f"{path}: DICOM modality {getattr(ds, 'Modality', '?')} without an SR content tree; "
            "encapsulated PDF reports cannot be parsed for coded values"
        )
    col = _Collector(f"dicom-sr:{getattr(ds, 'SOPInstanceUID', path.name)}")
    _walk_sr(ds.ContentSequence, col, None, None)
    exam = col.exam()
    if exam.is_empty():
        exam.warnings.append("SR contained no recognisable DXA T-/Z-score or BMD items")
    return exam


def read_dxa(path: Path) -> DxaExam:
    """Read DXA results from a CSV, JSON (ours or FHIR) or DICOM SR file."""
    if not path.is_file():
        raise DxaInputError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return read_csv(path)
    if suffix == ".json":
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DxaInputError(f"{path}: invalid JSON ({exc})") from exc
        return from_json_document(doc, f"json:{path.name}")
    return read_dicom_sr(path)


def without_levels(exam: DxaExam, levels: Iterable[str]) -> DxaExam:
    """Copy of ``exam`` with spine levels removed (e.g. fractured on imaging; ISCD)."""
    drop = {lv.upper() for lv in levels}
    spine = exam.sites.get("lumbar_spine")
    if spine is None or not drop:
        return exam
    kept = tuple(lv for lv in spine.levels if lv.level not in drop)
    sites = dict(exam.sites)
    sites["lumbar_spine"] = replace(spine, levels=kept)
    return DxaExam(sites, exam.source, list(exam.warnings))
