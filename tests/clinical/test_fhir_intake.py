"""FHIR R4 intake from Bundle files and from a real local FHIR HTTP endpoint."""

from __future__ import annotations

import json
import socket
from datetime import date
from pathlib import Path

import pytest
from fhirclient.models.bundle import Bundle

from osteo_node.clinical.assessment import build_assessment
from osteo_node.clinical.fhir_intake import (
    FhirIntakeError,
    fetch_from_server,
    load_bundle_file,
    record_from_resources,
)
from tests.clinical import fhir_data as fd
from tests.clinical.fhir_server import fhir_server

TODAY = date(2026, 11, 22)


@pytest.mark.parametrize("case", [fd.steroid_user, fd.myeloma_patient, fd.premenopausal_woman])
def test_fixtures_are_valid_fhir_r4b(case):
    Bundle(fd.bundle(case()), strict=True)  # FHIR 4.0.1 models: raises on any schema error


def test_steroid_user_from_fhir_server_with_paging():
    resources = fd.steroid_user() + fd.myeloma_patient()  # two patients on one server
    with fhir_server(resources, page_size=2) as srv:
        rec = fetch_from_server(srv.base, "steroid", today=TODAY)
        pages = [r for r in srv.requests if "Observation" in r]
    assert len(pages) == 2  # 4 observations, 2 per page: the next link was followed
    assert rec.age == 68 and rec.sex == "female" and rec.bmi == pytest.approx(22.4)
    assert set(rec.conditions) == {"rheumatoid_arthritis"}
    gc = rec.glucocorticoids()
    assert gc is not None
    assert gc.max_daily_prednisolone_mg == pytest.approx(10.0)
    assert gc.long_term is True and gc.high_dose is True and gc.current
    assert gc.duration_months == pytest.approx(22.4, abs=0.1)
    assert rec.labs["haemoglobin"].value == pytest.approx(129.0)  # g/dL converted to g/L
    assessment = build_assessment(rec)
    codes = {f.code for f in assessment.risk_factors}
    assert {"glucocorticoids_long_term", "rheumatoid_arthritis"} <= codes
    gcf = next(f for f in assessment.risk_factors if f.code == "glucocorticoids_long_term")
    assert gcf.detail is not None and "10.0 mg/day" in gcf.detail
    assert assessment.red_flags == []  # no cancer, labs normal
    assert assessment.risk.major_fracture_10y is not None


def test_myeloma_patient_from_bundle_file_gets_factors_and_red_flags(tmp_path: Path):
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(fd.bundle(fd.myeloma_patient())), encoding="utf-8")
    rec = load_bundle_file(path, today=TODAY)
    assert rec.age == 71 and rec.sex == "male"
    assert rec.bmi == pytest.approx(74 / 1.76**2)
    assert rec.labs["calcium"].value == pytest.approx(2.894, abs=1e-3)  # mg/dL -> mmol/L
    a = build_assessment(rec)
    codes = {f.code for f in a.red_flags}
    assert {"myeloma_history", "myeloma_labs", "high_alp"} <= codes
    assert "cancer_history" not in codes  # the myeloma Condition is not counted twice
    assert "unexplained_anaemia" not in codes  # explained by the myeloma
    labs = next(f for f in a.red_flags if f.code == "myeloma_labs")
    assert "monoclonal protein" in labs.reason and "hypercalcaemia" in labs.reason
    assert "haemoglobin 94 g/L" in labs.reason
    factor_codes = {f.code for f in a.risk_factors}
    assert "myeloma" in factor_codes and "cancer" not in factor_codes  # one Condition, once
    assert "any_cancer" in a.risk.inputs_used["risk_factors"]
    assert a.to_json()["red_flag_action"] == \
        "possible pathological fracture - consider MRI / oncology work-up"


def test_unknown_patient_and_partial_server_errors():
    with fhir_server(fd.steroid_user(), fail_types={"MedicationRequest"}) as srv:
        with pytest.raises(FhirIntakeError, match="not found"):
            fetch_from_server(srv.base, "nobody", today=TODAY)
        rec = fetch_from_server(srv.base, "steroid", today=TODAY)
    assert any("MedicationRequest search failed: HTTP 500" in m for m in rec.messages)
    assert rec.age == 68  # everything else still read


def test_unreachable_server_is_a_clear_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(FhirIntakeError, match="not reachable"):
        fetch_from_server(f"http://127.0.0.1:{port}/fhir", "p1", timeout=2)
    with pytest.raises(FhirIntakeError, match="http"):
        fetch_from_server("file:///etc/passwd", "p1")


def test_bad_and_partial_records_give_messages_and_missing_inputs(tmp_path: Path):
    pid = "partial"
    pat = fd.patient(pid, "unknown", "1950-01-01")
    del pat["birthDate"]
    no_code = fd.condition("c1", pid, fd.SNOMED, "69896004", "RA")
    no_code["code"] = {"text": "bad back"}
    malformed = fd.condition("c2", pid, fd.SNOMED, "69896004", "RA")
    malformed["code"] = "69896004"  # not a CodeableConcept
    refuted = fd.condition("c3", pid, fd.ICD10, "C90.0", "Multiple myeloma")
    refuted["verificationStatus"]["coding"][0]["code"] = "refuted"
    weight = fd.quantity_obs("w", pid, "29463-7", "Body weight", 150, "[stone_av]")
    no_value = fd.quantity_obs("alp", pid, "6768-6", "ALP", 1, "U/L")
    del no_value["valueQuantity"]
    dangling = fd.med_statement("m1", pid, fd.ATC, "H02AB06", "prednisolone",
                                course=fd.MedCourse(dose_mg=5))
    del dangling["medicationCodeableConcept"]
    dangling["medicationReference"] = {"reference": "Medication/missing"}
    no_dose = fd.med_statement("m2", pid, fd.RXNORM, "8640", "prednisone",
                              course=fd.MedCourse(dose_mg=None))
    doc = fd.bundle([pat, no_code, malformed, refuted, weight, no_value, dangling, no_dose])
    doc["entry"].append({"resource": "not a resource"})
    path = tmp_path / "partial.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    rec = load_bundle_file(path, today=TODAY)
    text = "\n".join(rec.messages)
    assert "birthDate missing" in text
    assert "gender 'unknown'" in text
    assert "Condition/c1: no coded diagnosis" in text
    assert "Condition/c2: malformed" in text
    assert "unit '[stone_av]' not convertible" in text
    assert "Observation/alp (alp): no usable value" in text
    assert "medicationReference Medication/missing not resolvable" in text
    assert "myeloma" not in rec.conditions  # refuted diagnosis ignored
    a = build_assessment(rec)
    assert a.risk.major_fracture_10y is None
    assert {"age", "sex", "bmi", "smoking", "alcohol"} <= set(a.risk.missing_inputs)
    assert any("dose not recorded" in (f.detail or "") for f in a.risk_factors)
    assert any("long-term use unknown" in n for n in a.risk.notes)
    assert "risk not computed" in a.summary()
    # Not JSON / not FHIR / missing file: clear errors.
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(FhirIntakeError, match="not a FHIR resource"):
        load_bundle_file(bad)
    bad.write_text("{oops")
    with pytest.raises(FhirIntakeError, match="not valid JSON"):
        load_bundle_file(bad)
    with pytest.raises(FhirIntakeError, match="cannot read"):
        load_bundle_file(tmp_path / "none.json")


def test_medication_request_supply_duration_and_patient_selection():
    pid = "mr"
    resources = [
        fd.patient(pid, "female", "1950-03-03"),
        fd.patient("other", "male", "1980-03-03"),
        fd.med_request("r1", pid, "8640", "prednisone 5 MG Oral Tablet", dose_mg=5,
                       authored="2026-01-01", supply_days=180),
        fd.med_request("r2", pid, "84857", "anastrozole 1 MG Oral Tablet", dose_mg=1,
                       authored="2026-05-01", supply_days=90),
        fd.smoking_obs("s", pid, "428071000124103", "Heavy tobacco smoker"),
        {"resourceType": "Observation", "id": "falls-no", "status": "final",
         "code": {"coding": [{"system": fd.SNOMED, "code": "161898004", "display": "Falls"}]},
         "subject": {"reference": f"Patient/{pid}"}, "valueBoolean": False},
    ]
    rec = record_from_resources(resources, patient_id=pid, today=TODAY)
    assert rec.sex == "female" and rec.age == 76
    gc = rec.glucocorticoids()
    assert gc is not None and gc.long_term is True and gc.high_dose is False
    assert gc.duration_months == pytest.approx(180 / 30.4375, abs=0.05)
    assert "aromatase_inhibitor" in rec.medications
    assert rec.smoking_category == 4
    assert rec.falls is None and "falls" not in rec.conditions  # a negative answer is no fall
    falls_yes = {"resourceType": "Observation", "id": "falls-yes", "status": "final",
                 "code": {"coding": [{"system": fd.SNOMED, "code": "161898004"}]},
                 "subject": {"reference": f"Patient/{pid}"}, "valueBoolean": True}
    rec2 = record_from_resources([*resources, falls_yes], patient_id=pid, today=TODAY)
    assert rec2.falls is True


def test_malformed_dxa_observations_do_not_stop_the_intake():
    """A DXA Observation whose code or value is not a JSON object is reported and skipped;
    the well-formed DXA result and the rest of the record are still read (it used to raise
    AttributeError out of the intake)."""
    pid = "dxa"
    good = {"resourceType": "Observation", "id": "t1", "status": "final",
            "subject": {"reference": f"Patient/{pid}"},
            "code": {"coding": [{"system": "http://loinc.org", "code": "38263-0"}]},
            "valueQuantity": {"value": -2.7}}
    bad_code = {**good, "id": "t2", "code": "x"}
    bad_value = {**good, "id": "t3", "valueQuantity": "x"}
    bad_coding = {**good, "id": "t4", "code": {"coding": ["38267-1"]}}
    rec = record_from_resources([fd.patient(pid, "female", "1950-01-01"), bad_code, bad_value,
                                 bad_coding, good], patient_id=pid, today=TODAY)
    assert rec.dxa is not None
    assert [(site, m.t_score) for site, m in rec.dxa.sites.items()] == [("femoral_neck", -2.7)]
    text = "\n".join(rec.dxa.warnings)
    assert "Observation t2: malformed code; skipped" in text
    assert "Observation t3 (38263-0): no numeric value" in text
