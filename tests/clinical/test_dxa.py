"""DXA intake (DICOM SR, FHIR, CSV, JSON) and WHO / ISCD interpretation."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import date
from pathlib import Path

import highdicom as hd
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.sr.codedict import codes

from osteo_node.clinical.dxa import (
    DxaInputError,
    from_fhir_resources,
    from_json_document,
    read_dxa,
)
from osteo_node.clinical.fhir_intake import record_from_resources
from osteo_node.clinical.interpret import choose_basis, interpret
from tests.clinical import fhir_data as fd


def _exam(sites: dict) -> object:
    return from_json_document({"sites": sites}, "test")


# --------------------------------------------------------------------------- interpretation


def test_forearm_only_osteoporosis_is_flagged():
    exam = _exam({"lumbar_spine": {"t_score": -1.4}, "femoral_neck": {"t_score": -1.8},
                  "total_hip": {"t_score": -1.2}, "radius_33": {"t_score": -2.9}})
    d = interpret(exam, 66, "female")
    assert d.basis == "t_score"
    assert d.category == "osteoporosis" and d.lowest_site == "radius_33"
    assert d.forearm_only_osteoporosis is True
    assert d.sites["femoral_neck"].category == "osteopenia"
    assert any("33% radius only" in n for n in d.notes)
    # Osteoporotic at the hip too: no longer forearm-only.
    exam2 = _exam({"femoral_neck": {"t_score": -2.6}, "radius_33": {"t_score": -2.9}})
    assert interpret(exam2, 66, "female").forearm_only_osteoporosis is False


def test_45_year_old_woman_is_judged_on_z_scores():
    exam = _exam({"lumbar_spine": {"t_score": -2.7, "z_score": -1.6},
                  "femoral_neck": {"t_score": -2.1, "z_score": -1.2}})
    d = interpret(exam, 45, "female")
    assert d.basis == "z_score"
    assert d.category == "within_expected_range_for_age"  # T -2.7 would read "osteoporosis"
    assert d.lowest_site == "lumbar_spine"
    assert any("Z-scores" in n for n in d.notes)
    low = _exam({"lumbar_spine": {"t_score": -3.1, "z_score": -2.3}})
    assert interpret(low, 45, "female").category == "below_expected_range_for_age"
    # Same numbers, postmenopausal status recorded: T-scores.
    assert interpret(exam, 45, "female", "postmenopausal").category == "osteoporosis"
    assert choose_basis(45, "male", "unknown") == "z_score"
    assert choose_basis(55, "male", "unknown") == "t_score"
    assert choose_basis(52, "female", "premenopausal") == "z_score"


def test_z_score_missing_for_young_patient_gives_no_category():
    d = interpret(_exam({"total_hip": {"t_score": -2.8}}), 40, "male")
    assert d.category is None
    assert "no z-score reported for total_hip" in d.sites["total_hip"].notes


def test_iscd_vertebral_exclusion_and_minimum_levels():
    levels = {"L1": {"t_score": -2.5}, "L2": {"t_score": -2.7}, "L3": {"t_score": -0.4},
              "L4": {"t_score": -2.6}}
    d = interpret(_exam({"lumbar_spine": {"t_score": -2.0, "levels": levels}}), 70, "female")
    spine = d.sites["lumbar_spine"]
    assert spine.excluded_levels == ("L3",)
    assert spine.used_levels == ("L1", "L2", "L4")
    assert spine.t_score == pytest.approx((-2.5 - 2.7 - 2.6) / 3)
    assert spine.category == "osteoporosis"  # reported total (-2.0, osteopenia) had L3 in it
    # Fractured levels on imaging are excluded too; L3/L4 left but 2.2 apart -> not usable.
    d2 = interpret(_exam({"lumbar_spine": {"t_score": -2.0, "levels": levels}}), 70, "female",
                   fractured_levels=["L1", "L2"])
    s2 = d2.sites["lumbar_spine"]
    assert s2.category is None and set(s2.excluded_levels) == {"L1", "L2"}
    assert any("cannot be identified" in n for n in s2.notes)
    # Three fractured levels: a single level is never used (ISCD minimum two).
    d3 = interpret(_exam({"lumbar_spine": {"t_score": -2.0, "levels": levels}}), 70, "female",
                   fractured_levels=["L1", "L2", "L4"])
    assert d3.sites["lumbar_spine"].category is None
    assert any("at least 2" in n for n in d3.sites["lumbar_spine"].notes)


def test_spine_hip_discordance():
    d = interpret(_exam({"lumbar_spine": {"t_score": -2.9}, "femoral_neck": {"t_score": -0.5},
                         "total_hip": {"t_score": -0.2}}), 70, "female")
    assert d.discordance is not None
    assert d.discordance.present and d.discordance.major
    same = interpret(_exam({"lumbar_spine": {"t_score": -1.5}, "total_hip": {"t_score": -2.0}}),
                     70, "female")
    assert same.discordance is not None and not same.discordance.present


# --------------------------------------------------------------------------- intake formats


def test_csv_and_json_intake(tmp_path: Path):
    csv_file = tmp_path / "dxa.csv"
    csv_file.write_text(
        "site,level,t_score,z_score,bmd_g_cm2,laterality\n"
        "lumbar_spine,,-2.1,-1.0,0.912,\n"
        "lumbar_spine,L1,-2.0,,0.880,\n"
        "lumbar_spine,L2,-2.2,,0.901,\n"
        "femoral_neck,,-1.6,-0.4,0.701,left\n"
        "femoral_neck,,-1.9,-0.7,0.680,right\n"
        "total_hip,,abc,,,\n"
        "wrist,,-3,,,\n",
        encoding="utf-8",
    )
    exam = read_dxa(csv_file)
    assert exam.sites["lumbar_spine"].t_score == -2.1
    assert [lv.level for lv in exam.sites["lumbar_spine"].levels] == ["L1", "L2"]
    assert exam.sites["femoral_neck"].t_score == -1.9  # lower side used
    assert exam.sites["femoral_neck"].laterality == "right"
    assert any("not a number" in w for w in exam.warnings)
    assert any("unknown DXA site 'wrist'" in w for w in exam.warnings)
    js = tmp_path / "dxa.json"
    js.write_text(json.dumps({"sites": {"radius_33": {"t_score": -2.6, "bmd_g_cm2": 0.61}}}))
    assert read_dxa(js).sites["radius_33"].t_score == -2.6
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DxaInputError, match="invalid JSON"):
        read_dxa(bad)
    with pytest.raises(DxaInputError, match="no such file"):
        read_dxa(tmp_path / "missing.csv")


def test_fhir_dxa_observations_us_core_codes():
    rec = record_from_resources(fd.premenopausal_woman(), today=date(2026, 11, 22))
    assert rec.age == 45 and rec.sex == "female"
    assert rec.dxa is not None
    assert rec.dxa.sites["lumbar_spine"].t_score == -2.7
    assert rec.dxa.sites["lumbar_spine"].z_score == -1.6
    assert rec.dxa.sites["femoral_neck"].z_score == -1.2
    from osteo_node.clinical.assessment import build_assessment

    doc = build_assessment(rec).to_json()["dxa"]
    assert doc["basis"] == "z_score"
    assert doc["category"] == "within_expected_range_for_age"
    assert doc["sites"]["lumbar_spine"] == {
        "t_score": -2.7, "z_score": -1.6, "category": "within_expected_range_for_age",
        "used_levels": [], "excluded_levels": [], "notes": []}
    broken = fd.quantity_obs("x", "young", "38264-8", "DXA Hip [T-score]", 0, "{T-score}")
    del broken["valueQuantity"]
    exam = from_fhir_resources([broken], "t")
    assert exam.is_empty() and any("no numeric value" in w for w in exam.warnings)


def _num(code: tuple[str, str, str], value: float, unit: str = "{T-score}",
         children: list | None = None) -> hd.sr.NumContentItem:
    item = hd.sr.NumContentItem(
        name=hd.sr.CodedConcept(*code), value=value,
        unit=hd.sr.CodedConcept(unit, "UCUM", unit), relationship_type="CONTAINS",
    )
    if children:
        item.ContentSequence = children
    return item


def _container(meaning: str, items: list) -> hd.sr.ContainerContentItem:
    c = hd.sr.ContainerContentItem(
        name=hd.sr.CodedConcept(meaning.upper().replace(" ", "_"), "99DXAVENDOR", meaning),
        relationship_type="CONTAINS",
    )
    c.ContentSequence = items
    return c


def test_dicom_sr_vendor_export_is_parsed(tmp_path: Path):
    """A Comprehensive SR as DXA vendors export it: LOINC-coded NUM items for the totals,
    private codes inside per-region containers for the spine levels, and a finding-site
    modifier naming the forearm region."""
    spine_levels = [
        _container(level, [_num(("T_SCORE", "99DXAVENDOR", "T-score"), t),
                           _num(("BMD", "99DXAVENDOR", "BMD"), bmd, "g/cm2")])
        for level, t, bmd in (("L1", -2.4, 0.80), ("L2", -2.6, 0.79), ("L3", -2.5, 0.83),
                              ("L4", -2.2, 0.88))
    ]
    spine = _container("AP Spine L1-L4", [
        _num(("38267-1", "LN", "DXA Lumbar spine [T-score] Bone density"), -2.5),
        _num(("85394-5", "LN", "DXA Lumbar spine [Z-score] Bone density"), -0.9, "{Z-score}"),
        _num(("24966-4", "LN", "DXA Lumbar spine [Mass/Area] Bone density"), 0.83, "g/cm2"),
        *spine_levels,
    ])
    hip = _container("Left Femur", [
        _num(("38263-0", "LN", "DXA Femur [T-score] Bone density"), -1.7),
        _num(("38264-8", "LN", "DXA Hip [T-score] Bone density"), -1.3),
    ])
    site_mod = hd.sr.CodeContentItem(
        name=codes.SCT.FindingSite,
        value=hd.sr.CodedConcept("RADIUS33", "99DXAVENDOR", "Radius 33%"),
        relationship_type="HAS CONCEPT MOD",
    )
    forearm = _container("Forearm", [
        _num(("T_SCORE", "99DXAVENDOR", "T-score"), -2.8, children=[site_mod]),
    ])
    root = hd.sr.ContainerContentItem(
        name=hd.sr.CodedConcept("38269-7", "LN", "DXA Bone density"), template_id=None,
    )
    root.ContentSequence = [spine, hip, forearm]
    evidence = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    sr = hd.sr.ComprehensiveSR(
        evidence=[evidence], content=root, series_instance_uid=hd.UID(), series_number=99,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="test DXA vendor",
        record_evidence=False,
    )
    path = tmp_path / "dxa_sr.dcm"
    sr.save_as(path)
    if shutil.which("dciodvfy"):  # the test input itself is a valid Comprehensive SR
        out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True,
                             check=False, timeout=60)
        errors = [ln for ln in (out.stdout + out.stderr).splitlines() if ln.startswith("Error")]
        assert errors == []
    exam = read_dxa(path)
    assert exam.sites["lumbar_spine"].t_score == -2.5
    assert exam.sites["lumbar_spine"].z_score == -0.9
    assert exam.sites["lumbar_spine"].bmd_g_cm2 == 0.83
    assert [(lv.level, lv.t_score) for lv in exam.sites["lumbar_spine"].levels] == [
        ("L1", -2.4), ("L2", -2.6), ("L3", -2.5), ("L4", -2.2)]
    assert exam.sites["femoral_neck"].t_score == -1.7
    assert exam.sites["total_hip"].t_score == -1.3
    assert exam.sites["radius_33"].t_score == -2.8
    d = interpret(exam, 72, "female")
    assert d.category == "osteoporosis" and d.lowest_site == "radius_33"
    assert not d.forearm_only_osteoporosis  # spine is osteoporotic as well
    assert d.discordance is not None and d.discordance.present


def test_non_sr_dicom_is_refused_clearly():
    with pytest.raises(DxaInputError, match="without an SR content tree"):
        read_dxa(Path(get_testdata_file("CT_small.dcm")))
