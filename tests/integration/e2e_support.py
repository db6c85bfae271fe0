"""Helpers for the end-to-end tests: real storescu -> ``osteo-node serve`` -> Orthanc."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import highdicom as hd
import pytest
from PIL import Image
from pydicom import dcmread
from sqlalchemy import select

from osteo_node.clinical.assessment import build_assessment
from osteo_node.clinical.red_flags import action as red_flag_action
from osteo_node.exporters.common import LEVEL_CAVEAT
from osteo_node.exporters.sr import IMAGE_LEVEL_ID, read_report
from osteo_node.queue.jobs import jobs
from osteo_node.store.db import make_engine
from tests.integration.orthanc import OrthancServer
from tests.node.support import (
    REPO,
    NodeProcess,
    fill_uids,
    free_port,
    node_config,
    storescu,
    wait_until,
    write_config,
)

# Realistic identifiers that must never appear in the node's log.
PATIENT_NAME = "Kowalczyk^Henrietta^Maria"
PATIENT_ID = "MRN-58213-77"
BIRTH_DATE = "19470312"


def identified_copies(src: list[Path], dst: Path) -> list[Path]:
    """Copies of a real series with new UIDs and a patient name/ID/birth date filled in."""
    files = fill_uids(src, dst)
    for f in files:
        ds = dcmread(f)
        ds.PatientName, ds.PatientID, ds.PatientBirthDate = PATIENT_NAME, PATIENT_ID, BIRTH_DATE
        ds.save_as(f, enforce_file_format=True)
    return files


def result_series(orthanc: OrthancServer, study_uid: str) -> dict[str, list[str]]:
    """Modality -> Orthanc instance IDs of the series Orthanc holds in the study ``study_uid``."""
    found = [r for r in orthanc.lookup(study_uid) if r.get("Type") == "Study"]
    if not found:
        return {}
    out: dict[str, list[str]] = {}
    for s in orthanc.series_of(found[0]["ID"]):
        modality = s["MainDicomTags"].get("Modality", "")
        out.setdefault(modality, []).extend(s["Instances"])
    return out


def analyze_json(folder: Path, out: Path, *extra: str) -> dict[str, Any]:
    r = subprocess.run(
        [sys.executable, "-m", "osteo_node", "analyze", str(folder), "--json", str(out), *extra],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=False,
    )
    data: dict[str, Any] = json.loads(out.read_text())
    # exit status 0: analysed, 3: not analysable (documented in osteo-node analyze --help)
    assert r.returncode == (0 if data["status"] == "analysed" else 3), r.stderr[-3000:]
    return data


# Float tolerance for values read back from the SR: highdicom writes each NUM value as a DS
# NumericValue (at most 16 characters, so >= 11 significant digits) plus an FD
# FloatingPointValue (the exact double, which read_report prefers). Nothing looser: the node and
# ``analyze`` run the same deterministic analysis, and both write its rounded values.
SR_FLOAT_REL = 1e-10


def _same_float(got: float | None, want: float | None) -> bool:
    if got is None or want is None:
        return got is None and want is None
    return bool(got == pytest.approx(want, rel=SR_FLOAT_REL, abs=1e-12))


def _expected_vertebra_values(v: dict[str, Any]) -> dict[str, float]:
    """The numeric values the SR must carry for one vertebra of the analyze JSON, keyed as
    :func:`read_report` names them (a null in the JSON means no item in the SR)."""
    out: dict[str, float] = {}
    hu = v["trabecular_hu"]
    if hu is not None:
        out["hu_mean"], out["hu_sd"] = hu["mean"], hu["sd"]
    for key in ("anterior", "middle", "posterior"):
        value = (v["heights_mm"] or {}).get(key)
        if value is not None:
            out[f"{key}_height"] = value
    if v["height_loss"] is not None:
        out["height_loss"] = v["height_loss"]
    return out


VERTEBRA_GROUP_SUFFIXES = (" heights", " trabecular ROI")  # exporters/sr/vertebra.py


def _num_items_by_group(sr_ds: Any) -> dict[str, int]:
    """Level (or the image-level identifier) -> number of NUM measurements in its groups (the
    vertebra's own, its heights and its trabecular-ROI group), read with highdicom
    independently of read_report (an item read_report folds into another key, e.g. a second
    attenuation derivation, shows up as a count mismatch; so does a repeated group)."""
    content: Any = hd.sr.Comprehensive3DSR.from_dataset(sr_ds).content
    groups = [*content.get_volumetric_roi_measurement_groups(),
              *content.get_planar_roi_measurement_groups(),
              *content.get_image_measurement_groups()]
    idents = [str(g.tracking_identifier) for g in groups]
    assert len(set(idents)) == len(idents), f"repeated measurement group: {idents}"
    out: dict[str, int] = {}
    for ident, g in zip(idents, groups, strict=True):
        level = next((ident[: -len(sfx)] for sfx in VERTEBRA_GROUP_SUFFIXES
                      if ident.endswith(sfx)), ident)
        out[level] = out.get(level, 0) + len(g.get_measurements())
    return out


def _expected_comments(analysis: dict[str, Any]) -> list[str]:
    """Disclaimer, the level caveat (uncertain names), one line per pathological red flag."""
    uncertain = [v["level"] for v in analysis["vertebrae"] if v["level_uncertain"]]
    f = analysis["findings"]
    if f["density_level_uncertain"] and f["density_level"] not in uncertain:
        uncertain.append(f["density_level"])
    caveat = [f"{LEVEL_CAVEAT} ({', '.join(uncertain)})"] if uncertain else []
    flags = build_assessment(None, None, analysis).red_flags
    return [analysis["disclaimer"], *caveat,
            *(f"Red flag: {r.reason} - {red_flag_action()}." for r in flags)]


def assert_sr_matches_json(sr_ds: Any, analysis: dict[str, Any]) -> None:
    """Issue 3 acceptance 3: every value the SR carries equals ``osteo-node analyze``'s JSON
    for the same input; a value present in one and absent in the other fails.

    Per vertebra: level, trabecular HU mean and SD, anterior / middle / posterior height,
    height_loss, Genant grade, morphology, level_uncertain. Image level: density level and its
    HU, osteoporosis suspected, contrast phase, density level_uncertain, pathological fracture
    suspected (from the red flags of the same JSON), the comments (disclaimer, level caveat, red
    flags), the model's name and version. The JSON's HU median, voxel count, volume,
    level_confidence, centroid, notes, texture and segmentation_confidence are not in the SR
    (its TID 1411 groups have no items for them), so they are not compared."""
    assert analysis["status"] == "analysed", analysis.get("reason")
    report = read_report(sr_ds)
    by_level = {v["level"]: v for v in analysis["vertebrae"]}
    counts = _num_items_by_group(sr_ds)
    assert set(counts) == {*by_level, IMAGE_LEVEL_ID}, (sorted(counts), sorted(by_level))
    assert set(report.vertebrae) == set(by_level), (sorted(report.vertebrae), sorted(by_level))
    for level, want in by_level.items():
        got = report.vertebrae[level]
        expected = _expected_vertebra_values(want)
        assert set(got.values) == set(expected), (level, got.values, expected)
        for key, value in expected.items():
            assert _same_float(got.values[key], value), (level, key, got.values[key], value)
        assert counts[level] == len(expected), (level, counts[level], expected)
        assert got.genant_grade == want["genant_grade"], level
        assert got.morphology == want["morphology"], level
        assert got.level_uncertain == want["level_uncertain"], level
    f = analysis["findings"]
    assert report.density_level == f["density_level"]
    assert _same_float(report.density_hu, f["l1_hu"]), (report.density_hu, f["l1_hu"])
    assert counts[IMAGE_LEVEL_ID] == (f["l1_hu"] is not None)
    assert report.osteoporosis_suspected == f["osteoporosis_suspected"]
    assert report.density_level_uncertain == f["density_level_uncertain"]
    assert report.contrast_phase == (analysis["contrast_phase"] or "unknown")
    assert report.pathological_fracture_suspected == bool(
        build_assessment(None, None, analysis).red_flags)
    assert report.comments == _expected_comments(analysis)
    model = analysis["model"]
    if model is not None:
        assert (report.algorithm_name, report.algorithm_version) == (model["name"],
                                                                     model["version"])
        assert f"sha256={model['sha256']}" in report.algorithm_parameters


def scanner_sends_to_pacs(orthanc: OrthancServer, files: list[Path], *store_args: str) -> None:
    """The scanner also sends the CT to PACS (the node's results join it in the same study)."""
    r = subprocess.run(["storescu", *store_args, "-aec", orthanc.aet, orthanc.host,
                        str(orthanc.dicom_port), *map(str, files)],
                       capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stderr[-2000:]


MRN_SYSTEM = "urn:oid:1.2.826.0.1.3680043.9.7777"  # the test hospital's patient-ID system


def start_node_for(tmp: Path, orthanc: OrthancServer, web: dict[str, Any] | None = None
                   ) -> tuple[NodeProcess, int]:
    """A node (``tmp/node``) sending SR/SEG/SC/KOS to ``orthanc`` with quick retries (and the
    web application when ``web`` is given: the ``web`` configuration section)."""
    port = free_port()
    dest = {"name": "orthanc", "ae_title": orthanc.aet, "host": orthanc.host,
            "port": orthanc.dicom_port, "send": ["sr", "seg", "sc", "kos"]}
    cfg = node_config(tmp / "node", port, destinations=[dest],
                      retry={"max_attempts": 5, "base_delay_seconds": 0.5,
                             "max_delay_seconds": 2},
                      fhir={"patient_identifier_system": MRN_SYSTEM}, **({"web": web} if web
                                                                         else {}))
    (tmp / "node").mkdir(parents=True, exist_ok=True)
    return NodeProcess(write_config(tmp / "node", cfg), tmp / "node.log").start(port), port


def run_series_through_node(tmp: Path, orthanc: OrthancServer, files: list[Path],
                            *store_args: str, expect: tuple[str, ...] = ("SR", "SEG", "OT"),
                            job_state: str = "done", web: dict[str, Any] | None = None,
                            ) -> tuple[str, dict[str, list[str]], str]:
    """Start a node sending SR/SEG/SC/KOS to ``orthanc``, send ``files`` to Orthanc (the
    scanner) and to the node, wait for the job (it must end in ``job_state``) and for the
    ``expect`` modalities in Orthanc."""
    node, port = start_node_for(tmp, orthanc, web)
    study_uid = str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    scanner_sends_to_pacs(orthanc, files, *store_args)
    try:
        sent = storescu(port, files, *store_args)
        assert len(sent.acknowledged) == len(files), sent.output[-2000:]
        engine = make_engine(f"sqlite:///{tmp / 'node' / 'node.db'}")

        def job_finished() -> list[str]:
            with engine.connect() as conn:
                states = [r[0] for r in conn.execute(select(jobs.c.state))]
            final = {"done", "not_analysable", "failed"}
            return states if states and all(s in final for s in states) else []

        states = wait_until(job_finished, 900, interval=0.5, what="analysis job finished")
        assert states == [job_state], (states, (tmp / "node.log").read_text()[-4000:])

        def results_arrived() -> dict[str, list[str]] | None:
            r = result_series(orthanc, study_uid)
            return r if set(expect) <= set(r) else None

        objects = wait_until(results_arrived, 120, interval=0.5,
                             what=f"{', '.join(expect)} in Orthanc")
    finally:
        assert node.stop() == 0
    return study_uid, objects, (tmp / "node.log").read_text(errors="replace")


def check_no_phi(log: str) -> None:
    for secret in (PATIENT_ID, BIRTH_DATE, *PATIENT_NAME.split("^")):
        assert secret not in log, f"PHI {secret!r} found in the node log"


def study_instances(orthanc: OrthancServer, study_uid: str) -> dict[str, dict[str, str]]:
    """SOP Instance UID -> {modality, series_uid, position} of every instance Orthanc holds in
    the study ``study_uid`` (from Orthanc's REST API)."""
    found = [r for r in orthanc.lookup(study_uid) if r.get("Type") == "Study"]
    out: dict[str, dict[str, str]] = {}
    for study in found:
        for series in orthanc.series_of(study["ID"]):
            tags = series["MainDicomTags"]
            for inst in orthanc.get_json(f"/series/{series['ID']}/instances"):
                out[str(inst["MainDicomTags"]["SOPInstanceUID"])] = {
                    "modality": str(tags.get("Modality", "")),
                    "series_uid": str(tags["SeriesInstanceUID"]),
                    "position": str(inst["MainDicomTags"].get("ImagePositionPatient", "")),
                }
    return out


def dciodvfy_errors(path: Path) -> list[str]:
    """The ``Error`` lines dicom3tools ``dciodvfy`` reports for a file."""
    proc = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=120,
                          check=False)
    return [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith("Error")]


def stored_objects_valid(results: dict[str, Any], folder: Path, sc_png: Path) -> None:
    """Write the result objects as PACS returned them to ``folder``, assert dciodvfy finds no
    error in any of them (when dicom3tools is installed) and save the SC (modality OT) as a PNG
    for a person to look at."""
    folder.mkdir(parents=True, exist_ok=True)
    for modality, ds in results.items():
        path = folder / f"{modality}.dcm"
        ds.save_as(path, enforce_file_format=True)
        if shutil.which("dciodvfy") is not None:
            assert not dciodvfy_errors(path), (modality, dciodvfy_errors(path))
    sc_pixels = results["OT"].pixel_array
    assert sc_pixels.ndim == 3 and sc_pixels.shape[2] == 3 and sc_pixels.std() > 0
    Image.fromarray(sc_pixels).save(sc_png)


def worklist_export(config: Path, fmt: str, out: Path) -> str:
    """``osteo-node worklist export --format FMT --out OUT`` on the node's database; returns
    the command's own output (stdout + stderr), which must hold no PHI."""
    r = subprocess.run(
        [sys.executable, "-m", "osteo_node", "worklist", "export", "--format", fmt,
         "--config", str(config), "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout + r.stderr


def results_in_ct_study(
    orthanc: OrthancServer, study_uid: str, objects: dict[str, list[str]], expected: Sequence[str],
    *, ct: tuple[str, int], patient_id: str, dicom_out: Path,
) -> tuple[dict[str, Any], dict[str, dict[str, str]]]:
    """Assert, with Orthanc's REST API, that each expected result object is a new series of one
    instance in the CT's own study next to the CT series ``ct`` = (series UID, instance
    count), carrying the patient ID, and that ``analyze --dicom-out`` wrote exactly these
    objects. Returns the fetched result datasets by modality and the study's instances."""
    held = study_instances(orthanc, study_uid)
    series_by_modality: dict[str, set[str]] = defaultdict(set)
    for info in held.values():
        series_by_modality[info["modality"]].add(info["series_uid"])
    assert set(series_by_modality) == {"CT", *expected}, dict(series_by_modality)
    assert series_by_modality["CT"] == {ct[0]} and len(objects["CT"]) == ct[1]
    for modality in expected:
        assert len(objects[modality]) == 1 and len(series_by_modality[modality]) == 1, modality
    assert len(set().union(*series_by_modality.values())) == 1 + len(expected)
    results = {m: orthanc.fetch_instance(objects[m][0]) for m in expected}
    for modality, ds in results.items():
        assert ds.StudyInstanceUID == study_uid and ds.PatientID == patient_id, modality
    offline = {str(dcmread(f, stop_before_pixels=True).SOPInstanceUID)
               for f in dicom_out.iterdir()}
    assert offline == {str(ds.SOPInstanceUID) for ds in results.values()}
    return results, held
