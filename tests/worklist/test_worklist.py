"""FLS worklist: rules, idempotent rows, status changes, CSV / FHIR round trips, CLI, no PHI in
logs. Uses the realistic AnalysisOutput of tests/exporters (real CT slices, fixture result)."""

from __future__ import annotations

import dataclasses
import io
import json
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from osteo_node import logging_setup
from osteo_node.cli.main import main as cli_main
from osteo_node.pipeline.results import AnalysisOutput, AnalysisResult
from osteo_node.store.db import make_engine
from osteo_node.store.schema import upgrade
from osteo_node.worklist import export_csv, fhir, rules, store
from tests.exporters.conftest import PATIENT_ID, PATIENT_NAME

pytestmark = pytest.mark.shared_data


@pytest.fixture()
def db(tmp_path: Path) -> tuple[str, Engine]:
    url = f"sqlite:///{tmp_path / 'node.db'}"
    engine = make_engine(url)
    upgrade(engine)
    yield url, engine  # type: ignore[misc]
    engine.dispose()


def _with(output: AnalysisOutput, **changes: object) -> AnalysisOutput:
    return AnalysisOutput(dataclasses.replace(output.result, **changes), output.volume,
                          output.labels)


def _calm(result: AnalysisResult, grade: int) -> AnalysisResult:
    assert result.findings is not None
    return dataclasses.replace(
        result, findings=dataclasses.replace(result.findings, osteoporosis_suspected=False,
                                             max_genant_grade=grade),
        vertebrae=[dataclasses.replace(v, genant_grade=min(v.genant_grade or 0, grade))
                   for v in result.vertebrae])


def test_rules(ct20_output: AnalysisOutput) -> None:
    r = ct20_output.result
    assert rules.classify(r) == "positive"
    assert rules.classify(_calm(r, 1)) == "review"
    assert rules.classify(_calm(r, 0)) is None
    assert rules.classify(dataclasses.replace(r, status="not_analysable")) is None
    no_review = dataclasses.replace(rules.load_rules(), review_grade=None)
    assert rules.classify(_calm(r, 1), no_review) is None
    only_density = dataclasses.replace(_calm(r, 0), findings=dataclasses.replace(
        _calm(r, 0).findings, osteoporosis_suspected=True))  # type: ignore[arg-type]
    assert rules.classify(only_density) == "positive"


def test_add_is_idempotent_and_keeps_status(db: tuple[str, Engine],
                                            ct20_output: AnalysisOutput) -> None:
    _, engine = db
    row_id = store.add_from_result(engine, ct20_output)
    assert row_id is not None
    store.set_status(engine, row_id, "contacted", changed_by="fls.nurse", note="left message")
    again = store.add_from_result(engine, ct20_output)
    assert again == row_id
    rows = store.list_rows(engine)
    assert len(rows) == 1
    row = rows[0]
    assert row.status == "contacted" and row.status_changed_by == "fls.nurse"
    assert row.patient_id == PATIENT_ID and row.patient_name == PATIENT_NAME
    assert row.study_instance_uid == ct20_output.result.study_instance_uid
    assert row.max_genant_grade == 2 and row.osteoporosis_suspected is True
    assert "T12 grade 2 wedge" in row.findings_summary
    assert row.trigger == "positive"


def test_negative_result_gets_no_row(db: tuple[str, Engine],
                                     ct20_output: AnalysisOutput) -> None:
    _, engine = db
    assert store.add_from_result(engine, _with(ct20_output, **_fields(
        _calm(ct20_output.result, 0)))) is None
    assert store.list_rows(engine) == []


def test_a_later_negative_analysis_withdraws_the_row(db: tuple[str, Engine],
                                                     ct20_output: AnalysisOutput) -> None:
    """Issue 16 (4): the partial series was positive, the complete one is not: one row per
    series, and it leaves the open list unless the FLS has already acted on it."""
    _, engine = db
    negative = _with(ct20_output, **_fields(_calm(ct20_output.result, 0)))
    assert store.withdraw(engine, negative) is None  # no row: nothing to do
    row_id = store.add_from_result(engine, ct20_output)
    assert store.withdraw(engine, negative) == row_id
    [row] = store.list_rows(engine)
    assert (row.status, row.status_changed_by) == ("not_indicated", "osteo-node")
    assert row.status_note == store.WITHDRAWN_NOTE
    # positive again (a third generation): the same row is refreshed, not a second one
    assert store.add_from_result(engine, ct20_output) == row_id
    store.set_status(engine, row_id, "contacted", changed_by="fls.nurse")
    store.withdraw(engine, negative)
    [row] = store.list_rows(engine)
    assert row.status == "contacted" and row.status_note == store.WITHDRAWN_NOTE


def _fields(r: AnalysisResult) -> dict[str, object]:
    return {"findings": r.findings, "vertebrae": r.vertebrae}


def test_status_errors(db: tuple[str, Engine], ct20_output: AnalysisOutput) -> None:
    _, engine = db
    row_id = store.add_from_result(engine, ct20_output)
    assert row_id is not None
    with pytest.raises(store.WorklistError, match="unknown status"):
        store.set_status(engine, row_id, "done", changed_by="x")
    with pytest.raises(store.WorklistError, match="no worklist row"):
        store.set_status(engine, row_id + 100, "referred", changed_by="x")
    with pytest.raises(store.WorklistError, match="changed_by"):
        store.set_status(engine, row_id, "referred", changed_by=" ")


def test_since_filter(db: tuple[str, Engine], ct20_output: AnalysisOutput) -> None:
    _, engine = db
    old = datetime(2024, 1, 10, 12, 0, tzinfo=UTC)
    store.add_from_result(engine, ct20_output, now=old)
    other = _with(ct20_output, series_instance_uid="1.2.3.4.5.6")
    store.add_from_result(engine, other, now=old + timedelta(days=30))
    assert len(store.list_rows(engine)) == 2
    assert [r.series_instance_uid for r in store.list_rows(engine, since=date(2024, 2, 1))] == [
        "1.2.3.4.5.6"]


def test_since_with_a_utc_offset_is_the_same_instant(db: tuple[str, Engine],
                                                     ct20_output: AnalysisOutput) -> None:
    """A date-time with an offset means that instant on every database (SQLite stores no
    offset: the filter compares UTC)."""
    _, engine = db
    store.add_from_result(engine, ct20_output, now=datetime(2024, 1, 10, 10, 0, tzinfo=UTC))
    plus2 = timezone(timedelta(hours=2))
    assert len(store.list_rows(engine, since=datetime(2024, 1, 10, 11, 30, tzinfo=plus2))) == 1
    assert store.list_rows(engine, since=datetime(2024, 1, 10, 12, 30, tzinfo=plus2)) == []
    # naive: UTC
    assert len(store.list_rows(engine, since=datetime(2024, 1, 10, 9, 59))) == 1
    assert store.list_rows(engine, since=datetime(2024, 1, 10, 10, 1)) == []


def test_csv_round_trip(db: tuple[str, Engine], ct20_output: AnalysisOutput) -> None:
    _, engine = db
    row_id = store.add_from_result(engine, ct20_output)
    assert row_id is not None
    store.set_status(engine, row_id, "referred", changed_by="dr.who", note='said "yes", ok')
    rows = store.list_rows(engine)
    assert export_csv.parse_csv(export_csv.to_csv(rows)) == rows
    # CSV injection: a formula-like text cell is neutralised and still round-trips
    store.set_status(engine, row_id, "referred", changed_by="@evil",
                     note="=HYPERLINK(\"http://x\")")
    rows = store.list_rows(engine)
    text = export_csv.to_csv(rows)
    assert "'=HYPERLINK" in text and ",'@evil," in text
    assert export_csv.parse_csv(text) == rows


MRN_SYSTEM = "urn:oid:1.2.826.0.1.3680043.9.7777"  # a hospital's patient-ID system (test)


def test_fhir_bundle_is_an_r4_transaction_of_conditional_creates(
        db: tuple[str, Engine], ct20_output: AnalysisOutput) -> None:
    _, engine = db
    row_id = store.add_from_result(engine, ct20_output)
    assert row_id is not None
    store.set_status(engine, row_id, "contacted", changed_by="fls.nurse")
    rows = store.list_rows(engine)
    text = fhir.bundle_json(rows, patient_system=MRN_SYSTEM)
    bundle = fhir.parse_bundle(text)  # FHIR 4.0.1 models, strict
    assert bundle.type == "transaction"
    by_type: dict[str, list[Any]] = {}
    for e in bundle.entry:
        by_type.setdefault(e.resource.resource_type, []).append(e.resource)
        # every entry a conditional create on its own first identifier
        ident = e.resource.identifier[0]
        assert e.request.method == "POST" and e.request.url == e.resource.resource_type
        assert e.request.ifNoneExist == f"identifier={ident.system}|{ident.value}"
    assert {k: len(v) for k, v in by_type.items()} == {
        "Patient": 1, "ImagingStudy": 1, "Observation": 3, "DiagnosticReport": 1, "Task": 1}
    task = by_type["Task"][0]
    assert task.status == "in-progress" and task.businessStatus.text == "contacted"
    assert task.for_fhir.reference == by_type_url(bundle, "Patient")
    study = by_type["ImagingStudy"][0]
    assert study.identifier[0].system == "urn:dicom:uid"
    assert study.identifier[0].value == f"urn:oid:{rows[0].study_instance_uid}"
    patient = by_type["Patient"][0]
    assert patient.identifier[0].system == MRN_SYSTEM
    assert patient.identifier[0].value == PATIENT_ID
    assert patient.birthDate.isostring == "1948-03-12"
    report = by_type["DiagnosticReport"][0]
    assert report.code.coding[0].code == "18748-4"
    assert rows[0].vcf_levels  # the fixture's T12 is Genant 2: the finding's SNOMED CT code
    assert [(c.system, c.code) for c in report.conclusionCode[0].coding] == [
        ("http://snomed.info/sct", "42942008")]
    assert len(report.result) == 3
    urls = {e.fullUrl for e in bundle.entry}
    for ref in [report.subject, *report.imagingStudy, *report.result]:
        assert ref.reference in urls
    density = next(o for o in by_type["Observation"] if o.code.coding[0].code == "112031")
    assert density.valueQuantity.code == "[hnsf'U]"
    assert float(density.valueQuantity.value) == pytest.approx(rows[0].density_hu)
    assert density.bodySite.coding[0].code == "23215003"
    # re-serialising the parsed bundle gives the same JSON (round trip)
    assert bundle.as_json() == json.loads(text)
    # the same rows give the same identifiers (a second push creates nothing new)
    again = json.loads(fhir.bundle_json(rows, patient_system=MRN_SYSTEM))
    assert [e["request"] for e in again["entry"]] == [e.request.as_json() for e in bundle.entry]


def test_fhir_needs_the_patient_identifier_system_and_rejects_invalid_resources(
        db: tuple[str, Engine], ct20_output: AnalysisOutput) -> None:
    _, engine = db
    store.add_from_result(engine, ct20_output)
    rows = store.list_rows(engine)
    with pytest.raises(fhir.FhirExportError, match="patient_identifier_system"):
        fhir.to_bundle(rows, patient_system=None)
    data = fhir.to_bundle(rows, patient_system=MRN_SYSTEM)
    data["entry"][2]["resource"]["valueQuantity"]["value"] = "low"  # not a decimal
    with pytest.raises(fhir.FhirExportError, match="not a valid FHIR R4 Bundle"):
        fhir.validate(data)
    del data["entry"][2]["resource"]["valueQuantity"]
    del data["entry"][2]["resource"]["code"]  # Observation.code is required (1..1)
    with pytest.raises(fhir.FhirExportError, match="code"):
        fhir.validate(data)


def by_type_url(bundle: Any, resource_type: str) -> str:
    return str(next(e.fullUrl for e in bundle.entry
                    if e.resource.resource_type == resource_type))


def test_cli_export_and_set_status_without_phi_in_logs(
        db: tuple[str, Engine], ct20_output: AnalysisOutput,
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url, engine = db
    log_stream = io.StringIO()
    logging_setup.configure("DEBUG", json=True, stream=log_stream)
    row_id = store.add_from_result(engine, ct20_output)
    csv_out, fhir_out = tmp_path / "wl.csv", tmp_path / "wl.json"
    assert cli_main(["--log-format", "json", "worklist", "set-status", str(row_id),
                     "contacted", "--by", "fls.nurse", "--db", url]) == 0
    assert cli_main(["worklist", "export", "--format", "csv", "--db", url,
                     "--out", str(csv_out)]) == 0
    assert cli_main(["worklist", "export", "--format", "fhir", "--since", "2000-01-01",
                     "--db", url, "--out", str(fhir_out)]) == 1  # no patient-ID system
    assert cli_main(["worklist", "export", "--format", "fhir", "--since", "2000-01-01",
                     "--patient-system", MRN_SYSTEM, "--db", url, "--out", str(fhir_out)]) == 0
    assert cli_main(["worklist", "set-status", str(row_id), "bogus", "--by", "x",
                     "--db", url]) == 1
    rows = export_csv.parse_csv(csv_out.read_text())
    assert len(rows) == 1 and rows[0].status == "contacted"
    assert PATIENT_ID in csv_out.read_text()  # the export itself carries the patient
    fhir.parse_bundle(fhir_out.read_text())
    captured = capsys.readouterr()
    logs = log_stream.getvalue() + captured.err
    assert "worklist_exported" in logs and "worklist_row" in logs
    for phi in (PATIENT_ID, PATIENT_NAME, "Fixturesson", "Ingrid", "19480312"):
        assert phi not in logs, phi
        assert phi not in captured.out, phi


def test_red_flags_from_the_patient_assessment_reach_the_row(
        db: tuple[str, Engine], ct20_output: AnalysisOutput) -> None:
    """A focal lytic area in a fractured body (texture as the CT analyser reports it) puts the
    pathological-fracture red flag and its recommended action on the FLS row; a calm body
    does not."""
    _, engine = db
    r = ct20_output.result
    lytic = {"reference_hu": 110.0, "spread_hu": 18.0, "lytic_cluster_mm3": 1500.0,
             "sclerotic_cluster_mm3": 0.0, "voxels": 900, "focal_lytic": True,
             "focal_sclerotic": False, "heterogeneous": False}
    flagged = [dataclasses.replace(v, texture=lytic) if v.genant_grade else v
               for v in r.vertebrae]
    row_id = store.add_from_result(engine, _with(ct20_output, vertebrae=flagged))
    row = store.list_rows(engine)[0]
    assert row.id == row_id
    assert "focal lytic area" in row.red_flags
    assert "consider MRI / oncology work-up" in row.findings_summary
    assert export_csv.parse_csv(export_csv.to_csv([row]))[0].red_flags == row.red_flags
    store.add_from_result(engine, ct20_output)  # the same series re-analysed: no texture
    assert store.list_rows(engine)[0].red_flags == ""


def test_cli_on_a_wrong_database_url_creates_nothing(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """A mistyped URL must not look like an empty worklist: exit 1, a message, no file made."""
    missing = tmp_path / "typo" / "node.db"
    url = f"sqlite:///{missing}"
    assert cli_main(["worklist", "export", "--format", "csv", "--db", url,
                     "--out", str(tmp_path / "w.csv")]) == 1
    assert cli_main(["worklist", "set-status", "1", "contacted", "--by", "fls", "--db", url]) == 1
    assert "no database file" in capsys.readouterr().err
    assert not missing.exists() and not missing.parent.exists()
    assert not (tmp_path / "w.csv").exists()
