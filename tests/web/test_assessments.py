"""DXA and clinical risk on the FLS web application: ``osteo-node assess --worklist`` stores a real
assessment (FHIR Bundle + DXA CSV + imaging analysis) against its study in the node database;
the study page shows the DXA sites with their T-scores and WHO categories (forearm-only
osteoporosis included), the QFracture-2012 risk with its category and ClinRisk's disclaimer
once; the worklist shows the risk category. A study without an assessment says "not assessed",
never a low risk. Rendered for real through Starlette's test client (SQLite)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, insert, select
from starlette.testclient import TestClient

from osteo_node.cli.main import main
from osteo_node.store.db import make_engine
from osteo_node.store.schema import upgrade
from osteo_node.web import users
from osteo_node.web.app import WebContext, create_app
from osteo_node.worklist import assessments
from osteo_node.worklist.store import fls_worklist
from tests.clinical import fhir_data as fd

ASSESSED, NOT_ASSESSED = "1.2.826.0.1.3680043.9.7777.1", "1.2.826.0.1.3680043.9.7777.2"
PASSWORD = "viewer-pass-123"
CLINRISK = "wrong patients being given the wrong treatment"  # from ClinRisk's disclaimer


@pytest.fixture()
def db(tmp_path: Path) -> Iterator[tuple[Engine, str]]:
    url = f"sqlite:///{tmp_path / 'node.db'}"
    engine = make_engine(url)
    upgrade(engine)
    users.add_user(engine, "vera", "viewer", PASSWORD)
    now = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
    with engine.begin() as conn:
        for n, study in enumerate((ASSESSED, NOT_ASSESSED)):
            conn.execute(insert(fls_worklist).values(
                study_instance_uid=study, series_instance_uid=f"{study}.1",
                patient_id=f"PID-{n}", patient_name=f"TEST^PATIENT{n}",
                patient_birth_date="19580301", patient_sex="F", study_date="20261120",
                trigger="fracture", max_genant_grade=2, vcf_levels="L1",
                findings_summary="Vertebral fracture L1 (G2).", created_at=now,
                updated_at=now, status="new"))
    yield engine, url
    engine.dispose()


def _inputs(tmp_path: Path, study: str = ASSESSED) -> list[str]:
    """The assess inputs of a 68-year-old woman on long-term glucocorticoids, osteoporotic at
    the 33 % radius only, with an L1 fracture on the CT of ``study``."""
    bundle, dxa = fd.steroid_user_inputs(tmp_path)
    analysis = tmp_path / "analysis.json"
    analysis.write_text(json.dumps({
        "status": "analysed", "reason": None, "modality": "CT", "study_instance_uid": study,
        "series_instance_uid": f"{study}.1", "vertebrae": [{"level": "L1", "genant_grade": 2}],
        "findings": {"osteoporosis_suspected": True, "l1_hu": 88.0, "vcf_levels": ["L1"],
                     "max_genant_grade": 2, "density_level": "L1"},
    }), encoding="utf-8")
    return ["--fhir", str(bundle), "--dxa", str(dxa), "--imaging", str(analysis)]


def _client(engine: Engine, tmp_path: Path) -> TestClient:
    client = TestClient(create_app(WebContext(engine, spool_dir=tmp_path)),
                        follow_redirects=False)
    page = client.get("/login").text
    token = re.search(r'name="csrf" value="([^"]+)"', page)
    assert token
    r = client.post("/login", data={"name": "vera", "password": PASSWORD,
                                    "csrf": token.group(1)})
    assert r.status_code == 303
    return client


def _row_id(engine: Engine, study: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(fls_worklist.c.id).where(
            fls_worklist.c.study_instance_uid == study)).scalar_one())


def _section(page: str) -> str:
    """The study page's DXA and clinical-risk part (up to the follow-up)."""
    return page[page.index("DXA and clinical risk"):page.index("<h2>Follow-up")]


def test_stored_assessment_on_the_study_page_and_the_worklist(
        db: tuple[Engine, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    engine, url = db
    out = tmp_path / "assessment.json"
    assert main(["--log-format", "json", "assess", *_inputs(tmp_path), "--json", str(out),
                 "--worklist", "--by", "fls.nurse", "--db", url]) == 0
    logs = capsys.readouterr().err
    assert f"stored for study {ASSESSED}" in logs
    assert '"assessment_stored"' in logs and '"stored_by": "fls.nurse"' in logs
    doc = json.loads(out.read_text(encoding="utf-8"))
    risk = doc["risk"]
    assert risk["category"] == "high" and doc["dxa"]["forearm_only_osteoporosis"] is True

    client = _client(engine, tmp_path)
    page = client.get(f"/rows/{_row_id(engine, ASSESSED)}")
    assert page.status_code == 200
    part = _section(page.text)
    # DXA: every site with its T-score and WHO category; forearm-only osteoporosis named
    assert "WHO category <strong" in part and ">osteoporosis</strong>" in part
    assert "forearm-only osteoporosis" in part
    for label, t, category in (("Lumbar spine", "-1.3", "osteopenia"),
                               ("Femoral neck", "-1.9", "osteopenia"),
                               ("Total hip", "-1.5", "osteopenia"),
                               ("33 % radius (forearm)", "-2.7", "osteoporosis")):
        assert re.search(rf"<td>{re.escape(label)}</td><td>{re.escape(t)}</td><td>-</td>"
                         rf"<td>{category}</td>", part), label
    # clinical risk: the model, its 10-year probabilities and the category
    assert "QFracture-2012 10-year risk" in part
    assert f"major osteoporotic fracture <strong>{risk['major_fracture_10y']:.1f} %" in part
    assert f"hip fracture <strong>{risk['hip_fracture_10y']:.1f} %" in part
    assert "high risk</strong>" in part and "long-term glucocorticoid therapy" in part
    assert "stored by fls.nurse" in part
    # the risk model's disclaimer once per page, the decision-support disclaimer once
    assert page.text.count(CLINRISK) == 1 and CLINRISK in part
    assert page.text.count("Decision support") == 1

    other = client.get(f"/rows/{_row_id(engine, NOT_ASSESSED)}").text
    assert '<span class="na">not assessed</span>' in _section(other)
    assert "low risk" not in other and "risk</strong>" not in other and CLINRISK not in other

    worklist = client.get("/").text
    rows = {m.group(1): m.group(0) for m in re.finditer(
        r"<tr>\s*<td><a href=\"/rows/(\d+)\".*?</tr>", worklist, re.S)}
    assert len(rows) == 2
    assert 'class="cat-high">high<' in rows[str(_row_id(engine, ASSESSED))]
    not_assessed = rows[str(_row_id(engine, NOT_ASSESSED))]
    assert not_assessed.count('<span class="na">not assessed</span>') == 1  # the risk cell
    assert "cat-" not in not_assessed
    assert "TEST^PATIENT" not in logs and "PID-0" not in logs  # the audit log holds no PHI


def test_a_newer_assessment_without_a_risk_says_not_computed(
        db: tuple[Engine, str], tmp_path: Path) -> None:
    """The newest stored assessment is shown; one whose risk could not be computed (no
    clinical data) reads "not computed" on both pages, never low, and has no disclaimer."""
    engine, url = db
    inputs = _inputs(tmp_path)
    assert main(["assess", *inputs, "--json", str(tmp_path / "a.json"), "--worklist",
                 "--by", "fls.nurse", "--db", url]) == 0
    imaging_only = inputs[inputs.index("--imaging"):inputs.index("--imaging") + 2]
    assert main(["assess", *imaging_only, "--json", str(tmp_path / "b.json"), "--worklist",
                 "--by", "dr.who", "--db", url]) == 0
    with engine.connect() as conn:
        stored = conn.execute(select(assessments.fls_assessments.c.stored_by)
                              .order_by(assessments.fls_assessments.c.id)).scalars().all()
    assert stored == ["fls.nurse", "dr.who"]  # every stored assessment kept, who and when
    client = _client(engine, tmp_path)
    part = _section(client.get(f"/rows/{_row_id(engine, ASSESSED)}").text)
    assert "stored by dr.who" in part and "no DXA results" in part
    assert 'QFracture-2012: <span class="na">not computed</span>' in part
    assert "missing: age, sex, bmi" in part and CLINRISK not in part and "low risk" not in part
    assert '<span class="na">not computed</span>' in client.get("/").text


def test_assessment_values_are_escaped_on_the_page(db: tuple[Engine, str],
                                                   tmp_path: Path) -> None:
    engine, _url = db
    out = tmp_path / "a.json"
    assert main(["assess", *_inputs(tmp_path), "--json", str(out)]) == 0
    doc = json.loads(out.read_text(encoding="utf-8"))
    doc["risk_factors"].append({"code": "x", "label": "<script>alert(1)</script>",
                                "source": "fhir", "detail": None})
    assessments.store(engine, doc, stored_by="ed")
    page = _client(engine, tmp_path).get(f"/rows/{_row_id(engine, ASSESSED)}").text
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_assess_worklist_refuses_without_a_study_or_who(
        db: tuple[Engine, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    engine, url = db
    bundle_only = _inputs(tmp_path)[:2]
    assert main(["assess", *bundle_only, "--json", "-", "--worklist", "--db", url]) == 2
    assert "needs --by" in capsys.readouterr().err
    assert main(["assess", *bundle_only, "--json", "-", "--worklist", "--by", "ed"]) == 2
    assert "needs --config FILE or --db URL" in capsys.readouterr().err
    assert main(["assess", *bundle_only, "--json", "-", "--by", "ed"]) == 2
    assert "go with --worklist" in capsys.readouterr().err
    assert main(["assess", *bundle_only, "--json", "-", "--worklist", "--by", "ed",
                 "--db", url]) == 2
    assert "no Study Instance UID" in capsys.readouterr().err
    assert main(["assess", *_inputs(tmp_path), "--json", "-", "--worklist", "--by", "ed",
                 "--study-uid", NOT_ASSESSED, "--db", url]) == 2
    assert f"not {NOT_ASSESSED}" in capsys.readouterr().err
    assert assessments.latest(engine, [ASSESSED, NOT_ASSESSED]) == {}
    # --study-uid alone: an assessment without imaging, for a study on the worklist
    assert main(["assess", *bundle_only, "--json", "-", "--worklist", "--by", "ed",
                 "--study-uid", NOT_ASSESSED, "--db", url]) == 0
    assert set(assessments.latest(engine, [ASSESSED, NOT_ASSESSED])) == {NOT_ASSESSED}
    with pytest.raises(assessments.AssessmentError, match="not an osteo-node assessment"):
        assessments.store(engine, {"risk": {}}, stored_by="ed", study_uid=ASSESSED)


def test_the_static_export_is_the_study_pages_view(db: tuple[Engine, str],
                                                   tmp_path: Path) -> None:
    """``osteo-node dashboard`` / ``assess --html`` render an assessment with the study page's
    own template: the same clinical section, word for word (less who stored it)."""
    from osteo_node.web.assessment_export import render_assessments

    engine, url = db
    out = tmp_path / "a.json"
    assert main(["assess", *_inputs(tmp_path), "--json", str(out), "--worklist", "--by", "ed",
                 "--db", url]) == 0
    doc = json.loads(out.read_text(encoding="utf-8"))

    def block(html: str) -> str:
        start = html.index('<section class="assessment">')
        part = html[start:html.index("</section>", start)]
        return " ".join(re.sub(r'<p class="uid">Assessment stored by[^<]*</p>', "", part).split())

    page = _client(engine, tmp_path).get(f"/rows/{_row_id(engine, ASSESSED)}").text
    export = render_assessments([doc])
    assert "forearm-only osteoporosis" in block(export)
    assert block(page) == block(export)
