"""End to end with real peers: dcmtk ``storescu`` -> ``osteo-node serve`` (the real CT analyser,
ONNX model and exporters) -> persisted outbox -> Orthanc in a private network namespace.

Issue 3 acceptance 2 (the objects arrive in the CT's own study), 3 (the SR's per-vertebra
values equal ``osteo-node analyze``'s JSON for the same input) and 4 (no PHI in the node's log
for the whole run); issue 6 acceptance 3 with the real analysis. The chest and 20-slice series
are not flagged (no KOS): ``test_flagged_ct_to_orthanc_with_kos`` sends a real flagged CT (the
TPTBox lumbar crop with its low-density L3, written as an axial DICOM series) and follows the
KOS and the FLS worklist (CSV and FHIR exports) to the end.
``test_graded_ct_sr_values_equal_analyze`` sends the real TotalSegmentator example CT (3 mm,
T12..L5 + S1) whose L2-L5 are measured and graded, so acceptance 3 is checked on non-null
heights, height loss and Genant grades (asserted non-null in the JSON and in the SR).
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom import dcmread
from sqlalchemy import select

from osteo_node.clinical.fracture_flag import flag_min_genant_grade
from osteo_node.exporters.kos import referenced_instance_uids
from osteo_node.exporters.sr import read_report
from osteo_node.pipeline.stages.volume import load_dicom_series, load_nifti
from osteo_node.queue.jobs import jobs
from osteo_node.store.db import make_engine
from osteo_node.worklist.fhir import parse_bundle
from osteo_node.worklist.store import fls_worklist
from tests.integration.ct_series import Identity, voxel_correspondence, write_axial_series
from tests.integration.e2e_support import (
    BIRTH_DATE,
    MRN_SYSTEM,
    PATIENT_ID,
    PATIENT_NAME,
    analyze_json,
    assert_sr_matches_json,
    check_no_phi,
    identified_copies,
    result_series,
    results_in_ct_study,
    run_series_through_node,
    start_node_for,
    stored_objects_valid,
    worklist_export,
)
from tests.integration.orthanc import OrthancServer, orthanc_fixture  # noqa: F401
from tests.node.support import REPO, storescu, wait_until

CT_MODEL = REPO / "ai_models" / "ct_sagittal" / "model.json"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk not installed"),
    pytest.mark.skipif(not CT_MODEL.is_file(), reason="CT model not present in ai_models/"),
]


def _flagged(analysis: dict[str, Any]) -> bool:
    """The node's flag rule: osteoporosis suspected or a Genant grade >= the flag grade."""
    findings = analysis["findings"]
    return bool(findings["osteoporosis_suspected"]) or (
        (findings["max_genant_grade"] or 0) >= flag_min_genant_grade())


def test_chest_ct_series_to_orthanc(tmp_path: Path, shared_data: Path,
                                    orthanc: OrthancServer) -> None:
    src = sorted((shared_data / "ct/chest_ct_series/dicom").glob("*.dcm"))
    files = identified_copies(src, tmp_path / "sent")
    study_uid, objects, log = run_series_through_node(tmp_path, orthanc, files)
    analysis = analyze_json(tmp_path / "sent", tmp_path / "analysis.json",
                            "--dicom-out", str(tmp_path / "dicom_out"))
    assert analysis["status"] == "analysed"
    assert any(v["level"].startswith("T") for v in analysis["vertebrae"]), "no thoracic level"
    # analyze --dicom-out writes exactly the objects the node sent (same exporters, same UIDs).
    offline = {str(dcmread(f, stop_before_pixels=True).SOPInstanceUID)
               for f in (tmp_path / "dicom_out").iterdir()}
    sent_uids = {str(orthanc.instance_tags(i)["SOPInstanceUID"])
                 for m, ids in objects.items() if m != "CT" for i in ids}
    assert offline == sent_uids
    # Every result object sits in the CT's own study, next to the CT.
    assert "CT" in objects and len(objects["CT"]) == len(files)
    assert len(objects["SR"]) == 1 and len(objects["SEG"]) == 1 and len(objects["OT"]) == 1
    flagged = _flagged(analysis)
    assert ("KO" in objects) == flagged
    assert_sr_matches_json(orthanc.fetch_instance(objects["SR"][0]), analysis)
    check_no_phi(log)
    # The operator's view of the same run.
    status = subprocess.run(
        [sys.executable, "-m", "osteo_node", "status", "--config",
         str(tmp_path / "node" / "node.yaml"), "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=True)
    info = json.loads(status.stdout)
    assert info["index"] == {"studies": 1, "series": 1, "instances": len(files)}
    assert info["jobs"]["done"] == 1 and info["queue_depth"] == 0
    assert info["recent_failures"] == []
    # The fracture liaison worklist got a row when something was flagged.
    engine = make_engine(f"sqlite:///{tmp_path / 'node' / 'node.db'}")
    with engine.connect() as conn:
        rows = list(conn.execute(select(fls_worklist.c.study_instance_uid)))
    assert rows == ([(study_uid,)] if flagged else [])


def test_jpeg2000_slices_to_orthanc(tmp_path: Path, shared_data: Path, artifacts_dir: Path,
                                    orthanc: OrthancServer) -> None:
    """The 20-slice contrast PET/CT slab (JPEG 2000 lossless, empty UIDs filled in by the test,
    sent compressed): analysed, and its SR, SEG and SC arrive in its own study. (A training case
    of the CT model since 1.3.0, see model_card.md: this checks the path, not generalisation.)
    40 mm of spine with no sacrum and no rib-free neighbour: every level name is marked
    uncertain, in the JSON and in the SR."""
    folder = shared_data / "ct/totalseg_example/dicom"
    src = sorted(p for p in folder.iterdir() if p.is_file())
    files = identified_copies(src, tmp_path / "sent")
    analysis = analyze_json(tmp_path / "sent", tmp_path / "analysis.json",
                            "--dicom-out", str(tmp_path / "dicom_out"))
    assert analysis["status"] == "analysed", analysis.get("reason")
    assert analysis["findings"]["density_level"] is not None
    assert analysis["vertebrae"] and all(v["level_uncertain"] for v in analysis["vertebrae"])
    expected = ("SR", "SEG", "OT", *(("KO",) if _flagged(analysis) else ()))
    study_uid, objects, log = run_series_through_node(tmp_path, orthanc, files, "-xv",
                                                      expect=expected)
    ct_series = str(dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)
    results, _held = results_in_ct_study(
        orthanc, study_uid, objects, expected, ct=(ct_series, len(files)),
        patient_id=PATIENT_ID, dicom_out=tmp_path / "dicom_out")
    assert len(objects["CT"]) == 20
    assert_sr_matches_json(results["SR"], analysis)
    stored_objects_valid(results, tmp_path / "from_orthanc", artifacts_dir / "e2e_slab_ct_sc.png")
    check_no_phi(log)


def _without_spine(files: list[Path], columns: int) -> None:
    """Keep the first ``columns`` pixel columns of each slice (the patient's right side: ribs,
    lung, liver, no spine); the geometry stays true (the first column does not move)."""
    for f in files:
        ds = dcmread(f)
        pixels = np.ascontiguousarray(ds.pixel_array[:, :columns])
        ds.PixelData, ds.Columns = pixels.tobytes(), columns
        ds.save_as(f, enforce_file_format=True)


def test_ct_without_spine_is_not_analysable_and_nothing_is_sent(
        tmp_path: Path, shared_data: Path, orthanc: OrthancServer) -> None:
    """Real CT with no spine in view (30 chest slices cut to the patient's right side): the node
    ends the job as not_analysable, says why in its log and the job record, and sends nothing
    to PACS (never a fake result): the study in Orthanc holds only the CT the scanner sent."""
    src = sorted((shared_data / "ct/chest_ct_series/dicom").glob("*.dcm"))[40:70]
    files = identified_copies(src, tmp_path / "sent")
    _without_spine(files, 160)
    analysis = analyze_json(tmp_path / "sent", tmp_path / "analysis.json")
    assert analysis["status"] == "not_analysable"
    _study, objects, log = run_series_through_node(tmp_path, orthanc, files, expect=(),
                                                   job_state="not_analysable")
    assert set(objects) == {"CT"} and len(objects["CT"]) == len(files)
    # nothing was queued for PACS either (so nothing can arrive later)
    done = [e for e in map(json.loads, filter(None, log.splitlines()))
            if e.get("event") == "job done"]
    assert [(e["status"], e["objects"]) for e in done] == [("not_analysable", 0)]
    assert analysis["reason"] in log
    check_no_phi(log)


TPTBOX_CT = "ct/tptbox_sample/sub-ct_label-22_ct.nii.gz"  # real lumbar CT, low-density L3
RESULT_MODALITIES = ("SR", "SEG", "OT", "KO")


def _key_image_centroids(analysis: dict[str, Any]) -> list[tuple[str, float]]:
    """(level, centroid z in LPS mm) of the vertebrae the KOS must point at: graded at or above
    the flag grade, and the density level when osteoporosis is suspected."""
    findings, limit = analysis["findings"], flag_min_genant_grade()
    levels = {v["level"] for v in analysis["vertebrae"] if (v["genant_grade"] or 0) >= limit}
    if findings["osteoporosis_suspected"] and findings["density_level"]:
        levels.add(findings["density_level"])
    return [(v["level"], float(v["centroid_mm"][2])) for v in analysis["vertebrae"]
            if v["level"] in levels]


def _kos_evidence(kos: Any) -> set[tuple[str, str, str]]:
    """(study, series, SOP instance) UIDs in the KOS's Current Requested Procedure Evidence."""
    return {(str(study.StudyInstanceUID), str(series.SeriesInstanceUID),
             str(ref.ReferencedSOPInstanceUID))
            for study in kos.CurrentRequestedProcedureEvidenceSequence
            for series in study.ReferencedSeriesSequence
            for ref in series.ReferencedSOPSequence}


def _axial_series(nifti: Path, shared_data: Path, out: Path, who: Identity
                  ) -> tuple[list[Path], Any]:
    """A real CT NIfTI written as a scanner stores it (axial slices, a real CT header from the
    chest series, a fake patient), checked voxel for voxel against the NIfTI."""
    template = sorted((shared_data / "ct/chest_ct_series/dicom").glob("*.dcm"))[0]
    files = write_axial_series(nifti, template, out, who)
    written = load_dicom_series(out).volume
    assert np.allclose(written.geometry.direction, np.eye(3).ravel()), "not an axial series"
    match = voxel_correspondence(written, load_nifti(nifti).volume)
    assert match.one_to_one and match.max_position_error_mm <= 1e-3, match
    assert match.max_value_diff <= 1.0, match
    return files, written


def _check_kos_references(kos: Any, results: dict[str, Any], held: dict[str, dict[str, str]],
                          study_uid: str) -> set[str]:
    """The KOS points at instances of this study that Orthanc holds, among them the SR, SEG and
    SC of the same job; returns the referenced SOP Instance UIDs."""
    evidence = _kos_evidence(kos)
    assert {study for study, _, _ in evidence} == {study_uid}
    for _, series_uid, sop_uid in evidence:
        assert sop_uid in held and held[sop_uid]["series_uid"] == series_uid, sop_uid
    content = set(referenced_instance_uids(kos))
    assert content == {sop for _, _, sop in evidence}
    assert {str(results[m].SOPInstanceUID) for m in ("SR", "SEG", "OT")} <= content
    return content


def _check_key_slices(content: set[str], held: dict[str, dict[str, str]], written: Any,
                      analysis: dict[str, Any]) -> None:
    """The key CT slices of the KOS are those through the flagged vertebrae, and only those."""
    key_z = [float(held[u]["position"].split("\\")[2]) for u in content
             if held[u]["modality"] == "CT"]
    half_gap = written.geometry.spacing[2] / 2 + 1e-3
    centroids = _key_image_centroids(analysis)
    assert centroids and key_z
    for level, z in centroids:
        assert min(abs(z - kz) for kz in key_z) <= half_gap, (level, z, key_z)
    for kz in key_z:
        assert min(abs(z - kz) for _, z in centroids) <= half_gap, (kz, centroids)


def _check_kos_description(kos: Any, findings: dict[str, Any]) -> None:
    description = " ".join(str(item.get("TextValue", "")) for item in kos.ContentSequence)
    if findings["osteoporosis_suspected"]:
        assert "osteoporosis suspected" in description, description


def _check_worklist_row(db: Path, study_uid: str) -> None:
    """The FLS worklist has one row, for the study."""
    engine = make_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        rows = list(conn.execute(select(fls_worklist.c.study_instance_uid)))
    engine.dispose()
    assert rows == [(study_uid,)]


def _check_csv_export(config: Path, out: Path, study_uid: str, ct_series_uid: str,
                      findings: dict[str, Any]) -> str:
    """``worklist export csv``: one row with the study, patient, status and density; returns
    the command's output."""
    cli_output = worklist_export(config, "csv", out)
    with open(out, newline="", encoding="utf-8") as f:
        csv_rows = list(csv.DictReader(f))
    assert len(csv_rows) == 1
    row = csv_rows[0]
    assert (row["study_instance_uid"], row["series_instance_uid"]) == (study_uid, ct_series_uid)
    assert (row["patient_id"], row["patient_name"]) == (PATIENT_ID, PATIENT_NAME)
    assert row["status"] == "new"
    assert row["osteoporosis_suspected"] == str(bool(findings["osteoporosis_suspected"])).lower()
    assert row["density_level"] == (findings["density_level"] or "")
    density = findings["l1_hu"]
    assert (float(row["density_hu"]) if row["density_hu"] else None) == (
        None if density is None else pytest.approx(density, abs=0.05))
    return cli_output


def _check_fhir_export(config: Path, out: Path, study_uid: str,
                       findings: dict[str, Any]) -> str:
    """``worklist export fhir``: a Bundle with one Patient, ImagingStudy and DiagnosticReport
    whose Observations carry the flag and the density; returns the command's output."""
    cli_output = worklist_export(config, "fhir", out)
    bundle = parse_bundle(out.read_text(encoding="utf-8"))  # FHIR 4.0.1 models, strict
    assert bundle.type == "transaction"
    by_type: dict[str, list[Any]] = defaultdict(list)
    for entry in bundle.entry or []:
        by_type[entry.resource.resource_type].append(entry)
        assert entry.request.method == "POST" and entry.request.ifNoneExist  # conditional
    assert len(by_type["Patient"]) == 1 and len(by_type["ImagingStudy"]) == 1
    assert len(by_type["DiagnosticReport"]) == 1
    patient_id = by_type["Patient"][0].resource.identifier[0]
    assert (patient_id.system, patient_id.value) == (MRN_SYSTEM, PATIENT_ID)
    study_entry = by_type["ImagingStudy"][0]
    assert study_entry.resource.identifier[0].value == f"urn:oid:{study_uid}"
    report = by_type["DiagnosticReport"][0].resource
    assert [r.reference for r in report.imagingStudy] == [study_entry.fullUrl]
    observations = {e.fullUrl: e.resource for e in by_type["Observation"]}
    assert {r.reference for r in report.result} == set(observations)
    values = [o.valueBoolean for o in observations.values() if o.valueBoolean is not None]
    assert values == [bool(findings["osteoporosis_suspected"])]
    density = findings["l1_hu"]
    hu = [float(o.valueQuantity.value) for o in observations.values() if o.valueQuantity]
    assert hu == ([] if density is None else [pytest.approx(density, abs=0.05)])
    return cli_output


def test_flagged_ct_to_orthanc_with_kos(tmp_path: Path, shared_data: Path, artifacts_dir: Path,
                                        orthanc: OrthancServer) -> None:
    # A real CT as a scanner stores it: axial slices with a real CT header and a (fake) patient.
    files, written = _axial_series(shared_data / TPTBOX_CT, shared_data, tmp_path / "sent",
                                   Identity(PATIENT_NAME, PATIENT_ID, BIRTH_DATE))

    # The offline analysis of the same files: it must be flagged (else no KOS is due).
    analysis = analyze_json(tmp_path / "sent", tmp_path / "analysis.json",
                            "--dicom-out", str(tmp_path / "dicom_out"))
    assert analysis["status"] == "analysed", analysis.get("reason")
    findings = analysis["findings"]
    assert _flagged(analysis), (
        "the real low-density TPTBox CT is no longer flagged (neither osteoporosis suspected "
        f"nor a Genant grade >= {flag_min_genant_grade()}): {findings}")

    study_uid, objects, log = run_series_through_node(tmp_path, orthanc, files,
                                                      expect=RESULT_MODALITIES)
    ct_series_uid = str(written.series_instance_uid)
    assert study_uid == written.study_instance_uid

    # Orthanc's REST API: SR, SEG, SC (OT) and KO each a new series of one instance in the
    # CT's own study; analyze --dicom-out writes exactly the objects the node sent.
    results, held = results_in_ct_study(
        orthanc, study_uid, objects, RESULT_MODALITIES, ct=(ct_series_uid, len(files)),
        patient_id=PATIENT_ID, dicom_out=tmp_path / "dicom_out")

    # The KOS points at instances of this study that Orthanc holds: the key CT slices through
    # the flagged vertebrae and the SR, SEG and SC of the same job.
    kos = results["KO"]
    content = _check_kos_references(kos, results, held, study_uid)
    _check_key_slices(content, held, written, analysis)
    _check_kos_description(kos, findings)

    # The SR's per-vertebra values equal the analyze JSON.
    assert_sr_matches_json(results["SR"], analysis)

    # The objects as stored in PACS pass dciodvfy; the SC is written out to be looked at.
    stored_objects_valid(results, tmp_path / "from_orthanc",
                         artifacts_dir / "e2e_flagged_ct_sc.png")

    # The FLS worklist: one row for the study, exported as CSV and as a FHIR R4 Bundle.
    _check_worklist_row(tmp_path / "node" / "node.db", study_uid)
    config = tmp_path / "node" / "node.yaml"
    cli_output = _check_csv_export(config, tmp_path / "fls.csv", study_uid, ct_series_uid,
                                   findings)
    cli_output += _check_fhir_export(config, tmp_path / "fls.json", study_uid, findings)

    # No PHI in the node's log for the whole run, nor in the export commands' own output.
    check_no_phi(log)
    check_no_phi(cli_output)


TOTALSEG_CT = "ct/totalseg_example/example_ct.nii.gz"  # real abdominal CT, 3 mm, T12..L5 + S1
GRADED_LEVELS = ("L2", "L3", "L4", "L5")  # complete bodies in view: heights and a Genant grade
HEIGHT_VALUES = {"anterior_height", "middle_height", "posterior_height", "height_loss"}


def test_graded_ct_sr_values_equal_analyze(tmp_path: Path, shared_data: Path,
                                           orthanc: OrthancServer) -> None:
    """Issue 3 acceptance 3 on a real CT whose lumbar bodies are measured and graded, so the
    SR-versus-JSON comparison covers heights, height loss and grades, not only nulls."""
    files, written = _axial_series(
        shared_data / TOTALSEG_CT, shared_data, tmp_path / "sent",
        Identity(PATIENT_NAME, PATIENT_ID, BIRTH_DATE, series_description="Abdomen axial 3 mm"))

    analysis = analyze_json(tmp_path / "sent", tmp_path / "analysis.json",
                            "--dicom-out", str(tmp_path / "dicom_out"))
    assert analysis["status"] == "analysed", analysis.get("reason")
    by_level = {v["level"]: v for v in analysis["vertebrae"]}
    for level in GRADED_LEVELS:
        v = by_level.get(level)
        assert v is not None, (level, sorted(by_level))
        assert v["genant_grade"] is not None and v["height_loss"] is not None, v
        assert None not in (v["heights_mm"] or {}).values() and v["heights_mm"], v
        assert v["trabecular_hu"] is not None, v
    flagged = _flagged(analysis)
    expect = ("SR", "SEG", "OT", *(("KO",) if flagged else ()))

    study_uid, objects, log = run_series_through_node(tmp_path, orthanc, files, expect=expect)
    assert study_uid == written.study_instance_uid

    # Each result is a new series of one instance in the CT's own study, next to the CT.
    results, _held = results_in_ct_study(
        orthanc, study_uid, objects, expect, ct=(str(written.series_instance_uid), len(files)),
        patient_id=PATIENT_ID, dicom_out=tmp_path / "dicom_out")

    # The SR's values equal the JSON, and the graded levels are really in the SR.
    sr = results["SR"]
    assert_sr_matches_json(sr, analysis)
    report = read_report(sr)
    for level in GRADED_LEVELS:
        got = report.vertebrae[level]
        assert got.genant_grade is not None and set(got.values) >= HEIGHT_VALUES, (level, got)
    # Each SR vertebra points at the SEG segment of the same level and tracking UID.
    segments = {int(s.SegmentNumber): s for s in results["SEG"].SegmentSequence}
    for level, got in report.vertebrae.items():
        assert got.segment_number is not None, level
        segment = segments[got.segment_number]
        assert (str(segment.TrackingID), str(segment.TrackingUID)) == (level, got.tracking_uid)

    engine = make_engine(f"sqlite:///{tmp_path / 'node' / 'node.db'}")
    with engine.connect() as conn:
        rows = list(conn.execute(select(fls_worklist.c.study_instance_uid)))
    engine.dispose()
    assert rows == ([(study_uid,)] if flagged else [])
    check_no_phi(log)


def test_resumed_transfer_supersedes_the_partial_results(tmp_path: Path, shared_data: Path,
                                                         orthanc: OrthancServer) -> None:
    """Issue 16 (4): a transfer interrupted for longer than ``series_quiet_seconds`` is
    analysed as it stands; when the rest arrives, the complete series' SR names the partial
    one as its predecessor and a rejection note (IOCM, 113001) withdraws every partial object
    in PACS. The FLS worklist keeps one row for the series."""
    src = sorted((shared_data / "ct/chest_ct_series/dicom").glob("*.dcm"))
    files = identified_copies(src, tmp_path / "sent")
    files.sort(key=lambda f: float(dcmread(f, stop_before_pixels=True)
                                   .ImagePositionPatient[2]))
    first, rest = files[: len(files) * 2 // 3], files[len(files) * 2 // 3:]
    node, port = start_node_for(tmp_path, orthanc)
    engine = make_engine(f"sqlite:///{tmp_path / 'node' / 'node.db'}")
    study_uid = str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)

    def jobs_done(n: int) -> list[tuple[int, str]] | None:
        with engine.connect() as conn:
            rows = [(r.generation, r.state) for r in conn.execute(
                select(jobs.c.generation, jobs.c.state).order_by(jobs.c.generation))]
        return rows if len(rows) == n and all(s not in {"queued", "running"}
                                              for _, s in rows) else None

    def in_orthanc(modality: str, n: int) -> list[Any] | None:
        ids = result_series(orthanc, study_uid).get(modality, [])
        return [orthanc.fetch_instance(i) for i in ids] if len(ids) >= n else None

    try:
        assert len(storescu(port, first).acknowledged) == len(first)
        assert wait_until(lambda: jobs_done(1), 600, interval=0.5,
                          what="partial series analysed") == [(1, "done")]
        [partial_sr] = wait_until(lambda: in_orthanc("SR", 1), 120, interval=0.5,
                                  what="partial SR in Orthanc")
        partial = {str(ds.SOPInstanceUID): str(ds.Modality)
                   for m in ("SR", "SEG", "OT", "KO")
                   for ds in (in_orthanc(m, 1) or [])}
        assert len(storescu(port, rest).acknowledged) == len(rest)
        assert wait_until(lambda: jobs_done(2), 600, interval=0.5,
                          what="complete series analysed") == [(1, "done"), (2, "done")]

        def rejection_note() -> Any:
            notes = [ds for ds in in_orthanc("KO", 1) or []
                     if ds.ConceptNameCodeSequence[0].CodeValue == "113001"]
            return notes[0] if notes else None

        note = wait_until(rejection_note, 120, interval=0.5, what="rejection note in Orthanc")
        srs = wait_until(lambda: in_orthanc("SR", 2), 120, interval=0.5, what="second SR")
    finally:
        assert node.stop() == 0
    assert set(referenced_instance_uids(note)) == set(partial)
    [complete_sr] = [ds for ds in srs if ds.SOPInstanceUID != partial_sr.SOPInstanceUID]
    pred = complete_sr.PredecessorDocumentsSequence[0]
    assert pred.StudyInstanceUID == study_uid
    assert pred.ReferencedSeriesSequence[0].ReferencedSOPSequence[0] \
        .ReferencedSOPInstanceUID == partial_sr.SOPInstanceUID
    assert "PredecessorDocumentsSequence" not in partial_sr
    with engine.connect() as conn:
        rows = conn.execute(select(fls_worklist.c.series_instance_uid)).all()
    assert len(rows) <= 1  # one row per series, whatever the two analyses found
    check_no_phi((tmp_path / "node.log").read_text(errors="replace"))

