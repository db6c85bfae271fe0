"""FHIR R4 (4.0.1) export of the FLS worklist: a ``transaction`` Bundle of conditional creates.

Validated against the FHIR 4.0.1 resource models of SMART on FHIR's ``fhirclient`` (generated
from the 4.0.1 StructureDefinitions; strict: unknown elements, wrong types and missing required
elements are errors). Every entry is ``POST`` with ``ifNoneExist`` on its identifier, so pushing
the same row twice creates nothing new (FHIR R4 3.1.0.8.1 conditional create). Identifiers:
the Patient's is the PACS patient ID in the hospital's identifier system (configured:
``fhir.patient_identifier_system``), the ImagingStudy's the Study Instance UID
(``urn:dicom:uid``), every other resource's a name-based UUID (``urn:ietf:rfc:3986``) of the
study, series and resource kind. Per worklist row:

- Patient (identifier = PACS patient ID in the configured system, name, birth date, gender),
- ImagingStudy (identifier ``urn:dicom:uid`` / ``urn:oid:<Study Instance UID>``, subject),
- DiagnosticReport (LOINC 18748-4, category RAD, status preliminary, conclusion with the
  decision-support disclaimer, imagingStudy, result -> Observations),
- Task: the FLS follow-up (status mapped to FHIR task status, worklist status as
  businessStatus, who / when),
- Observations: density (DCM 112031 Attenuation Coefficient, UCUM [hnsf'U], bodySite = SNOMED
  vertebra), osteoporosis suspected (private code, boolean), and one Genant grade per graded
  vertebra (private code, integer, bodySite).
- An uncertain level name (the analysis could not anchor it to a landmark) is said where the
  level is used: bodySite.text "L1? (level uncertain)" and a note with the level caveat on that
  Observation; the report's conclusion carries the worklist summary with the same caveat.
Codes are data: ``dicom_sr_templates/fhir_codes.yaml``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from fhirclient.models.bundle import Bundle
from fhirclient.models.fhirabstractbase import FHIRValidationError

from osteo_node import DISCLAIMER
from osteo_node.exporters import codes as dicom_codes
from osteo_node.exporters.codes import templates_dir
from osteo_node.exporters.common import LEVEL_CAVEAT, shown_level
from osteo_node.worklist.store import WorklistRow

NAMESPACE = uuid.UUID("6f1c1c0e-5d2a-4f55-9b8e-0e57e0f5a0b1")  # fullUrl namespace (UUID5)
GENDER = {"M": "male", "F": "female", "O": "other"}
URI_SYSTEM = "urn:ietf:rfc:3986"  # identifier system: the value is a URI (here urn:uuid:...)


class FhirExportError(ValueError):
    """The worklist cannot be written as FHIR (configuration missing, invalid resource)."""


@cache
def load_codes(path: Path | None = None) -> dict[str, Any]:
    data = yaml.safe_load((path or templates_dir() / "fhir_codes.yaml").read_text("utf-8"))
    if not isinstance(data, dict) or "systems" not in data or "codes" not in data:
        raise ValueError("fhir_codes.yaml needs systems and codes")
    return data


def coding(key: str, section: str = "codes") -> dict[str, str]:
    data = load_codes()
    entry = data[section][key]
    return {"system": data["systems"][entry["system"]], "code": str(entry["code"]),
            "display": str(entry["display"])}


def _vertebra(level: str, uncertain: bool) -> dict[str, Any]:
    c = dicom_codes.load().get("vertebrae", level)
    text = f"{shown_level(level, uncertain)} (level uncertain)" if uncertain else level
    return {"coding": [{"system": load_codes()["systems"]["snomed"], "code": c.value,
                        "display": c.meaning}], "text": text}


def level_uncertain(row: WorklistRow, level: str) -> bool:
    """Whether the row's analysis marked this level name uncertain (vertebrae_json)."""
    return any(v.get("level") == level and v.get("level_uncertain") for v in row.vertebrae)


def _urn(row: WorklistRow, kind: str) -> str:
    key = f"{row.study_instance_uid}/{row.series_instance_uid}/{kind}"
    return f"urn:uuid:{uuid.uuid5(NAMESPACE, key)}"


def _date(da: str) -> str | None:
    """DICOM DA (YYYYMMDD) -> FHIR date, None when empty or malformed."""
    if len(da) != 8 or not da.isdigit():
        return None
    return f"{da[:4]}-{da[4:6]}-{da[6:]}"


def _name(pn: str) -> list[dict[str, Any]]:
    if not pn:
        return []
    parts = pn.split("=", maxsplit=1)[0].split("^")
    name: dict[str, Any] = {"text": " ".join(p for p in (parts[1:2] + parts[:1]) if p)}
    if parts[0]:
        name["family"] = parts[0]
    given = [p for p in parts[1:3] if p]
    if given:
        name["given"] = given
    return [name]


def _patient(row: WorklistRow, system: str) -> dict[str, Any]:
    res: dict[str, Any] = {"resourceType": "Patient", "name": _name(row.patient_name)}
    if row.patient_id:
        res["identifier"] = [{"type": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]},
            "system": system, "value": row.patient_id}]
    if _date(row.patient_birth_date):
        res["birthDate"] = _date(row.patient_birth_date)
    if row.patient_sex in GENDER:
        res["gender"] = GENDER[row.patient_sex]
    return res


def _study(row: WorklistRow, patient_ref: str) -> dict[str, Any]:
    res: dict[str, Any] = {
        "resourceType": "ImagingStudy", "status": "available",
        "identifier": [{"system": load_codes()["systems"]["dicom_uid"],
                        "value": f"urn:oid:{row.study_instance_uid}"}],
        "subject": {"reference": patient_ref},
    }
    if row.accession_number:
        res["identifier"].append({"type": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}]},
            "value": row.accession_number})
    if _date(row.study_date):
        res["started"] = f"{_date(row.study_date)}T00:00:00Z"
    return res


def _observation(row: WorklistRow, url: str, patient_ref: str, code: dict[str, str],
                 value: dict[str, Any], body_site: str | None) -> dict[str, Any]:
    res: dict[str, Any] = {
        "resourceType": "Observation", "status": "preliminary",
        "identifier": [{"system": URI_SYSTEM, "value": url}],
        "category": [{"coding": [coding("observation_category")]}],
        "code": {"coding": [code], "text": code["display"]},
        "subject": {"reference": patient_ref},
        "issued": row.updated_at.astimezone(UTC).isoformat(),
        "note": [{"text": DISCLAIMER}],
        **value,
    }
    if body_site:
        uncertain = level_uncertain(row, body_site)
        res["bodySite"] = _vertebra(body_site, uncertain)
        if uncertain:
            res["note"].append({"text": f"{LEVEL_CAVEAT} ({shown_level(body_site, True)})"})
    return res


def row_resources(row: WorklistRow, patient_system: str) -> list[tuple[str, dict[str, Any]]]:
    """(fullUrl, resource) of one worklist row."""
    patient_ref, study_ref = _urn(row, "patient"), _urn(row, "study")
    out: list[tuple[str, dict[str, Any]]] = [(patient_ref, _patient(row, patient_system)),
                                              (study_ref, _study(row, patient_ref))]
    observations: list[tuple[str, dict[str, Any]]] = []
    if row.density_hu is not None:
        hu = load_codes()["units"]["hu"]
        url = _urn(row, "density")
        observations.append((url, _observation(
            row, url, patient_ref, coding("attenuation"),
            {"valueQuantity": {"value": round(float(row.density_hu), 2), "unit": hu["display"],
                               "system": load_codes()["systems"][hu["system"]],
                               "code": hu["code"]}}, row.density_level)))
    if row.osteoporosis_suspected is not None:
        url = _urn(row, "opsusp")
        observations.append((url, _observation(
            row, url, patient_ref, coding("osteoporosis_suspected"),
            {"valueBoolean": bool(row.osteoporosis_suspected)}, None)))
    for v in row.vertebrae:
        if v.get("genant_grade"):
            url = _urn(row, f"genant-{v['level']}")
            observations.append((url, _observation(
                row, url, patient_ref, coding("genant_grade"),
                {"valueInteger": int(v["genant_grade"])}, str(v["level"]))))
    report_ref = _urn(row, "report")
    report = {
        "resourceType": "DiagnosticReport", "status": "preliminary",
        "identifier": [{"system": URI_SYSTEM, "value": report_ref}],
        "category": [{"coding": [coding("report_category")]}],
        "code": {"coding": [coding("report")], "text": "Opportunistic osteoporosis screening"},
        "subject": {"reference": patient_ref},
        "imagingStudy": [{"reference": study_ref}],
        "issued": row.updated_at.astimezone(UTC).isoformat(),
        "result": [{"reference": url} for url, _ in observations],
        "conclusion": f"{row.findings_summary}. FLS status: {row.status}. {DISCLAIMER}",
    }
    if row.vcf_levels:  # a vertebra with Genant grade >= 2: the standard code of the finding
        report["conclusionCode"] = [{"coding": [coding("vertebral_compression_fracture")],
                                     "text": f"vertebral compression fracture {row.vcf_levels}"}]
    out.extend(observations)
    out.append((report_ref, report))
    out.append((_urn(row, "task"), _task(row, patient_ref, report_ref)))
    return out


def _task(row: WorklistRow, patient_ref: str, report_ref: str) -> dict[str, Any]:
    """The FLS follow-up of the row: status, who changed it and when."""
    task: dict[str, Any] = {
        "resourceType": "Task",
        "identifier": [{"system": URI_SYSTEM, "value": _urn(row, "task")}],
        "status": load_codes()["task_status"][row.status],
        "businessStatus": {"text": row.status},
        "intent": "proposal",
        "description": "Fracture liaison service follow-up (decision support, not a diagnosis)",
        "focus": {"reference": report_ref},
        "for": {"reference": patient_ref},
        "authoredOn": row.created_at.astimezone(UTC).isoformat(),
        "lastModified": (row.status_changed_at or row.updated_at).astimezone(UTC).isoformat(),
    }
    if row.status_changed_by:
        task["note"] = [{"text": f"status set by {row.status_changed_by}"
                                 + (f": {row.status_note}" if row.status_note else "")}]
    return task


def _condition(resource: dict[str, Any]) -> str | None:
    """``ifNoneExist`` search of a resource: its first identifier (system|value)."""
    ident = (resource.get("identifier") or [None])[0]
    if not ident or not ident.get("system") or not ident.get("value"):
        return None  # e.g. a patient without an ID: plain create
    return f"identifier={ident['system']}|{ident['value']}"


def _entry(url: str, resource: dict[str, Any]) -> dict[str, Any]:
    request = {"method": "POST", "url": resource["resourceType"]}
    condition = _condition(resource)
    if condition:
        request["ifNoneExist"] = condition
    return {"fullUrl": url, "resource": resource, "request": request}


def to_bundle(rows: Sequence[WorklistRow], *, patient_system: str | None,
              now: datetime | None = None) -> dict[str, Any]:
    """FHIR R4 transaction Bundle (JSON object) of the rows, validated against FHIR 4.0.1.

    ``patient_system``: the hospital's patient-identifier system URI (required: without it a
    conditional create cannot tell one hospital's patient 123 from another's)."""
    if not patient_system:
        raise FhirExportError(
            "no patient identifier system: set fhir.patient_identifier_system in the node "
            "configuration (or --patient-system), e.g. urn:oid:<your MRN assigning authority>")
    entries = [_entry(url, res) for row in rows for url, res in row_resources(row, patient_system)]
    data = {"resourceType": "Bundle", "type": "transaction",
            "timestamp": (now or datetime.now(UTC)).isoformat(), "entry": entries}
    validate(data)
    return data


def validate(data: dict[str, Any]) -> Bundle:
    """The Bundle as FHIR 4.0.1 models (strict); :class:`FhirExportError` when invalid."""
    try:
        return Bundle(data, strict=True)
    except FHIRValidationError as exc:
        raise FhirExportError(f"not a valid FHIR R4 Bundle: {exc}") from exc


def bundle_json(rows: Sequence[WorklistRow], *, patient_system: str | None,
                now: datetime | None = None) -> str:
    return json.dumps(to_bundle(rows, patient_system=patient_system, now=now), indent=2,
                      ensure_ascii=False)


def parse_bundle(text: str) -> Bundle:
    return validate(json.loads(text))
