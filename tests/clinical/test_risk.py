"""Fracture risk: QFracture-2012 behaviour, imaging evidence, categories, missing inputs.

Agreement of the QFracture-2012 equations with the authors' own implementation (issue #5,
acceptance 1) is tested in test_qfracture_clinrisk_source.py against outputs of ClinRisk's
compiled C code; no reference risk is typed by hand there.
"""

from __future__ import annotations

from datetime import date
from itertools import takewhile
from pathlib import Path

import pytest

from osteo_node.clinical import qfracture
from osteo_node.clinical.fhir_intake import record_from_resources
from osteo_node.clinical.risk import ImagingEvidence, assess_risk
from tests.clinical import fhir_data as fd


def test_five_year_risk_below_ten_year_and_flags_raise_risk():
    base = qfracture.QFractureInputs(age=70, sex="female", bmi=24.0)
    assert 0 < qfracture.risk_percent(base, "hip", 5) < qfracture.risk_percent(base, "hip", 10)
    fractured = qfracture.QFractureInputs(age=70, sex="female", bmi=24.0,
                                          flags=frozenset({"prior_fracture"}))
    assert qfracture.risk_percent(fractured, "hip", 10) > qfracture.risk_percent(base, "hip", 10)
    with pytest.raises(ValueError, match="unknown QFracture flags"):
        qfracture.QFractureInputs(age=70, sex="female", bmi=24.0, flags=frozenset({"bmd"}))


def test_steroid_user_gets_corticosteroid_input_and_category_raised():
    rec = record_from_resources(fd.steroid_user(), today=date(2026, 11, 22))
    risk = assess_risk(rec)
    assert risk.inputs_used["risk_factors"] == ["corticosteroids", "ra_sle"]
    assert risk.inputs_used["smoking"] == "ex_smoker"
    assert risk.major_fracture_10y is not None and risk.hip_fracture_10y is not None
    # Same woman without steroids and RA: the equation must give a lower risk.
    plain = qfracture.QFractureInputs(age=68, sex="female", bmi=22.4, smoking=1)
    assert risk.major_fracture_10y > qfracture.risk_percent(plain, "major", 10)
    assert (round(risk.major_fracture_10y, 1), round(risk.hip_fracture_10y, 1)) == (10.4, 4.6)
    assert risk.category == "high"  # hip >= 3 %
    assert "alcohol" in risk.missing_inputs and "smoking" not in risk.missing_inputs
    # A 52-year-old on the same long-term prednisolone: low by the numbers, raised one level.
    younger = fd.steroid_user()
    younger[0]["birthDate"] = "1974-05-14"
    risk52 = assess_risk(record_from_resources(younger, today=date(2026, 11, 22)))
    assert risk52.major_fracture_10y is not None and risk52.major_fracture_10y < 10
    assert risk52.category == "moderate"
    assert any("glucocorticoids raise" in r for r in risk52.category_reasons)


def test_prevalent_vertebral_fracture_on_imaging_counts_as_prior_fracture():
    rec = record_from_resources(
        [fd.patient("p", "female", "1956-01-01"),
         fd.quantity_obs("b", "p", "39156-5", "BMI", 24.0, "kg/m2")],
        today=date(2026, 11, 22),
    )
    without = assess_risk(rec)
    imaging = ImagingEvidence(vertebral_fracture_levels=("L1",), max_genant_grade=2, l1_hu=85.0)
    with_vcf = assess_risk(rec, imaging)
    assert "prior_fracture" in with_vcf.inputs_used["risk_factors"]
    assert with_vcf.hip_fracture_10y > without.hip_fracture_10y
    assert with_vcf.category == "high"
    assert any("prior hip or vertebral" in r for r in with_vcf.category_reasons)
    assert any("85 HU" in s for s in with_vcf.inputs_not_used)  # density reported, not used


def test_missing_inputs_listed_and_no_risk_without_bmi():
    rec = record_from_resources([fd.patient("p", "male", "1950-01-01")],
                                today=date(2026, 11, 22))
    risk = assess_risk(rec)
    assert risk.major_fracture_10y is None and risk.category is None
    assert {"bmi", "smoking", "alcohol", "conditions", "medications"} <= set(risk.missing_inputs)
    assert any("risk not computed: bmi" in n for n in risk.notes)
    nothing = assess_risk(None)
    assert {"age", "sex", "bmi"} <= set(nothing.missing_inputs)


def test_bmi_outside_model_range_is_clamped_and_reported():
    rec = record_from_resources(
        [fd.patient("p", "female", "1950-01-01"),
         fd.quantity_obs("b", "p", "39156-5", "BMI", 17.0, "kg/m2")], today=date(2026, 11, 22))
    risk = assess_risk(rec)
    assert risk.inputs_used["bmi"] == 20.0
    assert any("clamped" in n for n in risk.notes)


def _findings(**findings: object) -> dict:
    return {"status": "analysed", "modality": "CT", "study_instance_uid": "1.2.3",
            "vertebrae": [], "findings": {"vcf_levels": [], "max_genant_grade": None,
                                          **findings}}


def test_ct_density_is_reported_at_the_level_it_was_measured_at():
    """The analysis' density value (findings.l1_hu) is measured at findings.density_level:
    T12 on the real chest series (124.7 HU), not L1. The risk names that level, says when its
    name is uncertain, and never feeds it into the model."""
    rec = record_from_resources(
        [fd.patient("p", "female", "1956-01-01"),
         fd.quantity_obs("b", "p", "39156-5", "BMI", 24.0, "kg/m2")], today=date(2026, 11, 22))
    chest = ImagingEvidence.from_analysis(_findings(
        l1_hu=124.7, density_level="T12", density_level_uncertain=False))
    assert (chest.density_level, chest.density_level_uncertain) == ("T12", False)
    risk = assess_risk(rec, chest)
    shown = [s for s in risk.inputs_not_used if "HU" in s]
    assert shown == ["CT T12 attenuation 125 HU (not a model input)"], risk.inputs_not_used
    assert not any("L1" in s for s in risk.inputs_not_used)
    assert risk.major_fracture_10y == assess_risk(rec).major_fracture_10y  # not a model input
    unsure = assess_risk(rec, ImagingEvidence.from_analysis(_findings(
        l1_hu=88.0, density_level="L2", density_level_uncertain=True)))
    assert "CT L2 attenuation 88 HU (level uncertain) (not a model input)" in unsure.inputs_not_used
    l1 = assess_risk(rec, ImagingEvidence.from_analysis(_findings(
        l1_hu=92.0, density_level="L1", density_level_uncertain=False)))
    assert "CT L1 attenuation 92 HU (not a model input)" in l1.inputs_not_used
    old = assess_risk(rec, ImagingEvidence.from_analysis(_findings(l1_hu=92.0)))
    assert "CT attenuation 92 HU (level not stated) (not a model input)" in old.inputs_not_used


def _clinrisk_disclaimer_from_the_authors_outputs() -> str:
    """The disclaimer as recorded from ClinRisk's source in the reference outputs' header."""
    path = Path(__file__).parent / "data" / "qfracture_2012_authors_outputs.csv"
    header = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.startswith("#")]
    start = next(i for i, ln in enumerate(header) if ln.startswith("# Disclaimer of ClinRisk"))
    lines = [ln[4:].strip() for ln in takewhile(lambda ln: ln.startswith("#   "),
                                                header[start + 2:])]
    assert len(lines) >= 5, lines
    return " ".join(lines)


def test_every_qfracture_risk_carries_clinrisk_disclaimer_and_the_category_caveat():
    """ClinRisk's LGPL release requires its disclaimer alongside any risk score generated by its
    code (our coefficients are transcribed from it); the categories are CAROC / NOF cut-offs
    applied to QFracture, which the notes say."""
    rec = record_from_resources(fd.steroid_user(), today=date(2026, 11, 22))
    risk = assess_risk(rec)
    assert risk.major_fracture_10y is not None
    expected = _clinrisk_disclaimer_from_the_authors_outputs()
    assert "wrong patients being given the wrong treatment" in expected
    assert risk.disclaimer == expected
    assert risk.to_json()["disclaimer"] == expected
    caveat = [n for n in risk.to_json()["notes"] if "CAROC" in n]
    assert len(caveat) == 1 and "QFracture" in caveat[0] and "approximation" in caveat[0]
    none = assess_risk(record_from_resources([fd.patient("p", "male", "1950-01-01")],
                                             today=date(2026, 11, 22)))
    assert none.major_fracture_10y is None and none.disclaimer is None  # no score, no text
