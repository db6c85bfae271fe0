"""Clinical constants live in clinical_data YAML, once, and every user reads that one value.

- The Genant grade that flags a result is shared by the KOS key-image flag and the FLS worklist
  "positive" trigger (clinical_data/vertebral_fracture.yaml).
- ISCD: spine level exclusion never leaves fewer than the minimum number of evaluable levels.
- "Current smoker" / "alcohol 3 or more units/day" risk-factor listing and the M-protein words
  come from the data files.
"""

from __future__ import annotations

from datetime import date

from osteo_node.clinical import fracture_flag
from osteo_node.clinical.assessment import risk_factors
from osteo_node.clinical.dxa import LevelMeasurement
from osteo_node.clinical.fhir_intake import record_from_resources
from osteo_node.clinical.interpret import spine_level_exclusions
from osteo_node.clinical.red_flags import clinical_flags
from osteo_node.clinical.risk import ImagingEvidence
from osteo_node.clinical_data import load
from osteo_node.exporters import kos
from osteo_node.pipeline.results import AnalysisResult, Findings, VertebraResult
from osteo_node.worklist import rules
from tests.clinical import fhir_data as fd

TODAY = date(2026, 11, 22)


def _result(grades: dict[str, int]) -> AnalysisResult:
    vertebrae = [
        VertebraResult(level=level, level_confidence=0.9, label_value=i + 1,
                       centroid_mm=(0.0, 0.0, float(i)), trabecular_hu=None, heights_mm=None,
                       height_loss=None, morphology="wedge", genant_grade=g)
        for i, (level, g) in enumerate(grades.items())
    ]
    return AnalysisResult(
        status="analysed", reason=None, modality="CT", study_instance_uid="1.2.3",
        series_instance_uid="1.2.3.4", contrast_phase=None, model=None, vertebrae=vertebrae,
        findings=Findings(osteoporosis_suspected=False, l1_hu=160.0,
                          max_genant_grade=max(grades.values())),
    )


def test_kos_flag_and_worklist_positive_share_the_cited_grade() -> None:
    grade = fracture_flag.flag_min_genant_grade()
    data = load("vertebral_fracture")["flag_min_genant_grade"]
    assert grade == data["value"] == 2 and "Genant" in load("vertebral_fracture")["sources"][
        "genant_1993"]
    assert rules.load_rules().positive_min_grade == grade
    at, below = _result({"L1": grade, "L2": 0}), _result({"L1": grade - 1, "L2": 0})
    assert kos.is_flagged(at) and rules.classify(at) == "positive"
    assert not kos.is_flagged(below) and rules.classify(below) != "positive"
    assert [v.level for v in kos.flagged_vertebrae(at)] == ["L1"]
    # an explicit grade still overrides the shared default
    assert kos.is_flagged(below, min_grade=grade - 1)


def test_risk_counts_graded_vertebrae_from_the_cited_grade() -> None:
    lowest = fracture_flag.risk_prior_fracture_min_genant_grade()
    analysis = {"findings": {}, "vertebrae": [
        {"level": "T12", "genant_grade": lowest}, {"level": "L1", "genant_grade": lowest - 1}]}
    assert ImagingEvidence.from_analysis(analysis).vertebral_fracture_levels == ("T12",)


def _levels(*t_scores: float) -> list[LevelMeasurement]:
    return [LevelMeasurement(f"L{i + 1}", t, None, None) for i, t in enumerate(t_scores)]


def test_spine_exclusion_stops_at_the_iscd_minimum_of_evaluable_levels() -> None:
    minimum = int(load("dxa_who")["spine_levels"]["minimum_evaluable_levels"])
    used, excluded = spine_level_exclusions(_levels(-1.0, -3.5, -1.2, 0.5))
    assert excluded and len(used) >= minimum
    # alternating outliers: every level differs from its neighbours by > 1.0, exclusion must
    # still stop when the ISCD minimum is reached
    used, excluded = spine_level_exclusions(_levels(-3.0, 0.0, -3.0, 0.0))
    assert len(used) == minimum and len(excluded) == 4 - minimum


def test_current_smoking_and_alcohol_listed_from_the_data_cut_offs() -> None:
    listing = load("clinical_codes")["risk_factor_listing"]
    heavy = [fd.patient("p", "female", "1950-01-01"),
             fd.smoking_obs("s", "p", "428071000124103", "Heavy tobacco smoker"),
             fd.quantity_obs("a", "p", "74013-4", "Alcohol", listing["alcohol_min_units_per_day"],
                             "{drinks}/d")]
    factors = {f.code: f for f in risk_factors(record_from_resources(heavy, today=TODAY), None)}
    assert factors["current_smoking"].detail == "heavy"
    assert factors["alcohol"].label == "alcohol 3 or more units/day"
    light = [fd.patient("p", "female", "1950-01-01"),
             fd.smoking_obs("s", "p", "8517006", "Ex-smoker"),
             fd.quantity_obs("a", "p", "74013-4", "Alcohol", 2.0, "{drinks}/d")]
    codes = {f.code for f in risk_factors(record_from_resources(light, today=TODAY), None)}
    assert not {"current_smoking", "alcohol"} & codes


def _text_obs(loinc: str, text: str) -> dict[str, object]:
    return {"resourceType": "Observation", "id": "m", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": loinc}]},
            "subject": {"reference": "Patient/p"}, "effectiveDateTime": "2026-10-01",
            "valueString": text}


def test_m_protein_free_text_read_with_the_data_words() -> None:
    words = load("red_flags")["labs"]
    assert "paraprotein" in words["m_protein_positive_words"]
    for text, flagged in (("Paraprotein band seen", True), ("Not detected", False)):
        rec = record_from_resources(
            [fd.patient("p", "male", "1950-01-01"), _text_obs("33358-3", text)], today=TODAY)
        codes = {f.code for f in clinical_flags(rec)}
        assert ("myeloma_labs" in codes) is flagged, (text, codes)
