"""End to end with real peers: dcmtk ``storescu`` -> ``osteo-node serve`` (the real CT analyser,
ONNX model and exporters) -> persisted outbox -> Orthanc in a private network namespace.

Issue 3 acceptance 2 (the objects arrive in the CT's own study), 3 (the SR's per-vertebra
values equal ``osteo-node analyze``'s JSON for the same input) and 4 (no PHI in the node's log
for the whole run); issue 6 acceptance 3 with the real analysis.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pydicom import dcmread
from sqlalchemy import select

from osteo_node.queue.jobs import jobs
from osteo_node.store.db import make_engine
from osteo_node.worklist.store import fls_worklist
from tests.integration.e2e_support import (
    analyze_json,
    assert_sr_matches_json,
    check_no_phi,
    identified_copies,
    run_series_through_node,
)
from tests.integration.orthanc import OrthancServer, orthanc_fixture  # noqa: F401
from tests.node.support import (
    REPO,
    NodeProcess,
    free_port,
    node_config,
    storescu,
    wait_until,
    write_config,
)

CT_MODEL = REPO / "ai_models" / "ct_vertebrae" / "model.json"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk not installed"),
    pytest.mark.skipif(not CT_MODEL.is_file(), reason="CT model not present in ai_models/"),
]

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
    flagged = bool(analysis["findings"]["osteoporosis_suspected"]) or (
        (analysis["findings"]["max_genant_grade"] or 0) >= 2)
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
    assert bool(rows) == flagged or rows == [(study_uid,)]


def test_jpeg2000_slices_to_orthanc(tmp_path: Path, shared_data: Path,
                                    orthanc: OrthancServer) -> None:
    folder = shared_data / "ct/totalseg_example/dicom"
    src = sorted(p for p in folder.iterdir() if p.is_file())
    files = identified_copies(src, tmp_path / "sent")
    analysis = analyze_json(tmp_path / "sent", tmp_path / "analysis.json")
    if analysis["status"] != "analysed":
        # The node must then finish the job without sending anything (never a fake result).
        port = free_port()
        cfg = node_config(tmp_path / "node", port, destinations=[
            {"name": "orthanc", "ae_title": orthanc.aet, "host": orthanc.host,
             "port": orthanc.dicom_port}])
        (tmp_path / "node").mkdir(parents=True, exist_ok=True)
        node = NodeProcess(write_config(tmp_path / "node", cfg), tmp_path / "node.log")
        node.start(port)
        try:
            assert len(storescu(port, files, "-xv").acknowledged) == 20
            engine = make_engine(f"sqlite:///{tmp_path / 'node' / 'node.db'}")

            def job_state() -> str | None:
                with engine.connect() as conn:
                    states = [r[0] for r in conn.execute(select(jobs.c.state))]
                return states[0] if states and states[0] in {"done", "failed"} else None

            assert wait_until(job_state, 600, interval=0.5, what="job finished") == "done"
        finally:
            assert node.stop() == 0
        assert orthanc.instance_count() == 0
        check_no_phi((tmp_path / "node.log").read_text(errors="replace"))
        pytest.xfail(f"CT model cannot analyse this held-out case yet: {analysis['reason']}")
    _, objects, log = run_series_through_node(tmp_path, orthanc, files, "-xv")
    assert len(objects["CT"]) == 20
    assert_sr_matches_json(orthanc.fetch_instance(objects["SR"][0]), analysis)
    check_no_phi(log)
