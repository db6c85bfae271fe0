"""Realistic FHIR R4 resources for the clinical tests (shapes as US Core / Synthea emit them)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SNOMED = "http://snomed.info/sct"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
ATC = "http://www.whocc.no/atc"
UCUM = "http://unitsofmeasure.org"

TODAY = "2026-11-22"


def patient(pid: str, gender: str, birth: str) -> dict[str, Any]:
    return {
        "resourceType": "Patient", "id": pid,
        "meta": {"profile": ["http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient"]},
        "identifier": [{"system": "urn:oid:2.16.840.1.113883.19.5", "value": f"MRN-{pid}"}],
        "name": [{"family": "Test", "given": ["Case"]}],
        "gender": gender, "birthDate": birth,
    }


def condition(cid: str, pid: str, system: str, code: str, display: str,
              onset: str = "2019-03-01") -> dict[str, Any]:
    return {
        "resourceType": "Condition", "id": cid,
        "clinicalStatus": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
            "code": "active"}]},
        "verificationStatus": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
            "code": "confirmed"}]},
        "category": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/condition-category",
            "code": "problem-list-item"}]}],
        "code": {"coding": [{"system": system, "code": code, "display": display}],
                 "text": display},
        "subject": {"reference": f"Patient/{pid}"},
        "onsetDateTime": onset,
    }


@dataclass(frozen=True)
class ObsDetails:
    """The less-often varied parts of a quantity Observation."""

    category: str = "laboratory"
    when: str = "2026-10-01T09:00:00Z"
    ref_high: float | None = None


LABORATORY = ObsDetails()
VITAL_SIGNS = ObsDetails(category="vital-signs")
IMAGING = ObsDetails(category="imaging")


def quantity_obs(oid: str, pid: str, loinc: str, display: str, value: float, unit: str,
                 *, details: ObsDetails = LABORATORY) -> dict[str, Any]:
    obs: dict[str, Any] = {
        "resourceType": "Observation", "id": oid, "status": "final",
        "category": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": details.category}]}],
        "code": {"coding": [{"system": LOINC, "code": loinc, "display": display}]},
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": details.when,
        "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit},
    }
    if details.ref_high is not None:
        obs["referenceRange"] = [{"high": {"value": details.ref_high, "unit": unit,
                                           "system": UCUM, "code": unit}}]
    return obs


def smoking_obs(oid: str, pid: str, snomed: str, display: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation", "id": oid, "status": "final",
        "category": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": "social-history"}]}],
        "code": {"coding": [{"system": LOINC, "code": "72166-2",
                             "display": "Tobacco smoking status"}]},
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": "2026-10-01T09:00:00Z",
        "valueCodeableConcept": {"coding": [{"system": SNOMED, "code": snomed,
                                             "display": display}]},
    }


@dataclass(frozen=True)
class MedCourse:
    """Dose (mg per intake; None: no dosage recorded), intakes per day, period and status."""

    dose_mg: float | None
    per_day: int = 1
    start: str = "2025-01-10"
    end: str | None = None
    status: str = "active"


def med_statement(mid: str, pid: str, system: str, code: str, display: str, *,
                  course: MedCourse) -> dict[str, Any]:
    res: dict[str, Any] = {
        "resourceType": "MedicationStatement", "id": mid, "status": course.status,
        "medicationCodeableConcept": {"coding": [{"system": system, "code": code,
                                                  "display": display}]},
        "subject": {"reference": f"Patient/{pid}"},
        "effectivePeriod": {"start": course.start, **({"end": course.end} if course.end else {})},
    }
    if course.dose_mg is not None:
        res["dosage"] = [{
            "text": f"{course.dose_mg:g} mg {course.per_day} times daily",
            "timing": {"repeat": {"frequency": course.per_day, "period": 1, "periodUnit": "d"}},
            "doseAndRate": [{"doseQuantity": {"value": course.dose_mg, "unit": "mg",
                                              "system": UCUM, "code": "mg"}}],
        }]
    return res


def med_request(mid: str, pid: str, rxnorm: str, display: str, *, dose_mg: float,
                authored: str, supply_days: int) -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest", "id": mid, "status": "active", "intent": "order",
        "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": rxnorm,
                                                  "display": display}]},
        "subject": {"reference": f"Patient/{pid}"},
        "authoredOn": authored,
        "dosageInstruction": [{
            "timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}},
            "doseAndRate": [{"doseQuantity": {"value": dose_mg, "unit": "mg", "system": UCUM,
                                              "code": "mg"}}],
        }],
        "dispenseRequest": {"expectedSupplyDuration": {"value": supply_days, "unit": "days",
                                                       "system": UCUM, "code": "d"}},
    }


def bundle(resources: list[dict[str, Any]], btype: str = "collection") -> dict[str, Any]:
    return {
        "resourceType": "Bundle", "type": btype,
        "entry": [{"fullUrl": f"urn:uuid:{r['resourceType'].lower()}-{r['id']}", "resource": r}
                  for r in resources],
    }


def steroid_user() -> list[dict[str, Any]]:
    """68-year-old woman with rheumatoid arthritis on prednisolone 10 mg/day since 2025-01."""
    pid = "steroid"
    return [
        patient(pid, "female", "1958-05-14"),
        condition("ra", pid, SNOMED, "69896004", "Rheumatoid arthritis"),
        med_statement("pred", pid, ATC, "H02AB06", "prednisolone",
                      course=MedCourse(dose_mg=5, per_day=2, start="2025-01-10")),
        quantity_obs("bmi", pid, "39156-5", "Body mass index (BMI) [Ratio]", 22.4, "kg/m2",
                     details=VITAL_SIGNS),
        smoking_obs("smk", pid, "8517006", "Ex-smoker"),
        quantity_obs("hb", pid, "718-7", "Hemoglobin [Mass/volume] in Blood", 12.9, "g/dL"),
        quantity_obs("alp", pid, "6768-6", "Alkaline phosphatase", 88, "U/L",
                     details=ObsDetails(ref_high=130)),
    ]


def myeloma_patient() -> list[dict[str, Any]]:
    """71-year-old man with multiple myeloma, M-protein, anaemia, hypercalcaemia."""
    pid = "myeloma"
    return [
        patient(pid, "male", "1955-02-03"),
        condition("mm", pid, ICD10, "C90.0", "Multiple myeloma"),
        quantity_obs("wt", pid, "29463-7", "Body weight", 74.0, "kg", details=VITAL_SIGNS),
        quantity_obs("ht", pid, "8302-2", "Body height", 176.0, "cm", details=VITAL_SIGNS),
        quantity_obs("mp", pid, "33358-3", "Protein.monoclonal [Mass/volume] in Serum",
                     28.0, "g/L"),
        quantity_obs("hb", pid, "718-7", "Hemoglobin [Mass/volume] in Blood", 94, "g/L"),
        quantity_obs("ca", pid, "17861-6", "Calcium [Mass/volume] in Serum or Plasma", 11.6,
                     "mg/dL"),
        quantity_obs("alp", pid, "6768-6", "Alkaline phosphatase", 210, "U/L",
                     details=ObsDetails(ref_high=129)),
        quantity_obs("cr", pid, "2160-0", "Creatinine", 1.4, "mg/dL"),
    ]


def premenopausal_woman() -> list[dict[str, Any]]:
    """45-year-old woman (born 1981-06-01) with DXA Observations (US Core style)."""
    pid = "young"
    obs = [
        ("38267-1", "DXA Lumbar spine [T-score] Bone density", -2.7),
        ("85394-5", "DXA Lumbar spine [Z-score] Bone density", -1.6),
        ("38263-0", "DXA Femur [T-score] Bone density", -2.1),
        ("80934-3", "DXA Femur [Z-score] Bone density", -1.2),
    ]
    return [patient(pid, "female", "1981-06-01")] + [
        quantity_obs(f"dxa{i}", pid, code, display, value, "{T-score}" if "T-" in display
                     else "{Z-score}", details=IMAGING)
        for i, (code, display, value) in enumerate(obs)
    ]


#: DXA results osteoporotic at the 33 % radius only (forearm-only osteoporosis)
FOREARM_ONLY_DXA_CSV = ("site,level,t_score,z_score,bmd_g_cm2,laterality\n"
                        "lumbar_spine,,-1.3,,,\nfemoral_neck,,-1.9,,,\ntotal_hip,,-1.5,,,\n"
                        "radius_33,,-2.7,,,\n")


def steroid_user_inputs(folder: Path) -> tuple[Path, Path]:
    """``assess`` inputs written to ``folder``: the FHIR bundle of :func:`steroid_user` and
    DXA results osteoporotic at the 33 % radius only."""
    bundle_path = folder / "bundle.json"
    bundle_path.write_text(json.dumps(bundle(steroid_user())), encoding="utf-8")
    dxa = folder / "dxa.csv"
    dxa.write_text(FOREARM_ONLY_DXA_CSV, encoding="utf-8")
    return bundle_path, dxa
