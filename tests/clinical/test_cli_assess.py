"""``osteo-node assess`` end to end: FHIR Bundle / FHIR server + DXA + imaging -> JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from osteo_node.cli.main import main
from tests.clinical import fhir_data as fd
from tests.clinical.fhir_server import fhir_server

SITES = {"lumbar_spine", "femoral_neck", "total_hip", "radius_33"}


def _check_schema(doc: dict) -> None:
    assert {"patient", "dxa", "risk_factors", "risk", "red_flags", "summary"} <= set(doc)
    assert set(doc["patient"]) >= {"age", "sex"}
    assert {"category", "lowest_site", "sites", "forearm_only_osteoporosis",
            "discordance"} <= set(doc["dxa"])
    assert set(doc["dxa"]["sites"]) <= SITES
    for site in doc["dxa"]["sites"].values():
        assert {"t_score", "z_score", "category"} <= set(site)
    assert {"model", "hip_fracture_10y", "major_fracture_10y", "category",
            "missing_inputs"} <= set(doc["risk"])
    assert isinstance(doc["risk_factors"], list) and isinstance(doc["red_flags"], list)
    for flag in doc["red_flags"]:
        assert {"code", "reason"} <= set(flag)
    assert isinstance(doc["summary"], str) and doc["summary"]


def test_assess_bundle_dxa_and_imaging(tmp_path: Path):
    bundle, dxa = fd.steroid_user_inputs(tmp_path)
    analysis = tmp_path / "analysis.json"
    analysis.write_text(json.dumps({
        "status": "analysed", "reason": None, "modality": "CT", "study_instance_uid": "1.2.3",
        "series_instance_uid": "1.2.3.4", "vertebrae": [{"level": "L1", "genant_grade": 2}],
        "findings": {"osteoporosis_suspected": True, "l1_hu": 88.0, "vcf_levels": ["L1"],
                     "max_genant_grade": 2},
    }), encoding="utf-8")
    out = tmp_path / "out" / "assessment.json"
    rc = main(["assess", "--fhir", str(bundle), "--dxa", str(dxa), "--imaging",
               str(analysis), "--json", str(out)])
    assert rc == 0
    doc = json.loads(out.read_text())
    _check_schema(doc)
    assert doc["patient"]["sex"] == "female"
    assert doc["dxa"]["category"] == "osteoporosis"
    assert doc["dxa"]["lowest_site"] == "radius_33"
    assert doc["dxa"]["forearm_only_osteoporosis"] is True
    assert doc["risk"]["model"] == "QFracture-2012"
    assert doc["risk"]["category"] == "high"
    assert "prior_fracture" in doc["risk"]["inputs_used"]["risk_factors"]
    codes = {f["code"] for f in doc["risk_factors"]}
    assert {"glucocorticoids_long_term", "rheumatoid_arthritis",
            "prevalent_vertebral_fracture"} <= codes
    assert doc["red_flags"] == []
    assert "Decision support only" in doc["summary"]


def test_assess_fhir_server_subprocess(tmp_path: Path):
    out = tmp_path / "a.json"
    with fhir_server(fd.myeloma_patient()) as srv:
        proc = subprocess.run(
            [sys.executable, "-c", "from osteo_node.cli.main import entry; entry()", "assess",
             "--fhir-url", srv.base, "--patient", "myeloma", "--json", str(out)],
            capture_output=True, text=True, timeout=120, check=False,
        )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    _check_schema(doc)
    assert doc["patient"] == {"age": doc["patient"]["age"], "sex": "male"}
    assert {f["code"] for f in doc["red_flags"]} >= {"myeloma_history", "myeloma_labs"}
    assert doc["dxa"]["category"] is None and doc["dxa"]["sites"] == {}


def test_assess_fhir_server_with_a_bearer_token(tmp_path: Path, capsys):
    token_file = tmp_path / "token"
    token_file.write_text("ehr-issued-token\n")
    out = tmp_path / "a.json"
    with fhir_server(fd.myeloma_patient(), token="ehr-issued-token") as srv:
        assert main(["assess", "--fhir-url", srv.base, "--patient", "myeloma",
                     "--fhir-token-file", str(token_file), "--json", str(out)]) == 0
        sent = [a for a in srv.auth[1:]]  # after the metadata poll
        assert sent and all(a == "Bearer ehr-issued-token" for a in sent)
        assert main(["assess", "--fhir-url", srv.base, "--patient", "myeloma",
                     "--json", "-"]) == 2
        assert "HTTP 401" in capsys.readouterr().err
        token_file.write_text("expired\n")
        assert main(["assess", "--fhir-url", srv.base, "--patient", "myeloma",
                     "--fhir-token-file", str(token_file), "--json", "-"]) == 2
        err = capsys.readouterr().err
        assert "HTTP 401" in err and "check the bearer token" in err and "expired" not in err
    assert {f["code"] for f in json.loads(out.read_text())["red_flags"]} >= {"myeloma_history"}


def test_assess_bad_inputs_exit_2(tmp_path: Path, capsys):
    assert main(["assess", "--fhir", str(tmp_path / "none.json"), "--json", "-"]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert main(["assess", "--fhir-url", "http://127.0.0.1:9/fhir", "--json", "-"]) == 2
    assert "needs --patient" in capsys.readouterr().err
    bad = tmp_path / "x.dcm"
    bad.write_bytes(b"not dicom")
    assert main(["assess", "--dxa", str(bad), "--json", "-"]) == 2
    assert "not a readable DICOM" in capsys.readouterr().err
    # No inputs at all still gives a valid document with everything missing.
    assert main(["assess", "--json", "-"]) == 0
    doc = json.loads(capsys.readouterr().out)
    _check_schema(doc)
    assert {"age", "sex", "bmi"} <= set(doc["risk"]["missing_inputs"])


@pytest.mark.shared_data
def test_assess_on_the_real_chest_ct_analysis(shared_data: Path, tmp_path: Path):
    """``osteo-node analyze`` on the real chest CT series, then ``assess --imaging``: no red flag
    (its T5/T6 heterogeneous texture is not a pathological-fracture sign in unfractured bodies,
    the same decision the SR and the worklist read) and the CT density named at the level the
    analysis measured it (T12 here), not 'L1'."""
    analysis = tmp_path / "chest.json"
    assert main(["analyze", str(shared_data / "ct" / "chest_ct_series" / "dicom"), "--quiet",
                 "--json", str(analysis)]) == 0
    findings = json.loads(analysis.read_text())["findings"]
    assert findings["density_level"] and findings["l1_hu"] is not None, findings
    bundle = tmp_path / "bundle.json"
    bundle.write_text(json.dumps(fd.bundle(fd.steroid_user())), encoding="utf-8")
    out = tmp_path / "assessment.json"
    assert main(["assess", "--fhir", str(bundle), "--imaging", str(analysis),
                 "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    _check_schema(doc)
    assert doc["red_flags"] == [] and doc["pathological_fracture_suspected"] is False
    assert "RED FLAGS" not in doc["summary"]
    level = findings["density_level"]
    expected = f"CT {level} attenuation {findings['l1_hu']:.0f} HU"
    if findings["density_level_uncertain"]:
        expected += " (level uncertain)"
    assert f"{expected} (not a model input)" in doc["risk"]["inputs_not_used"], doc["risk"]
    assert doc["imaging"]["density_level"] == level
    if level != "L1":
        assert not any("CT L1" in s for s in doc["risk"]["inputs_not_used"])
