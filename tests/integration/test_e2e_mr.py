"""End to end for MRI (issue 4 acceptance 3): a real sagittal lumbar MRI volume (a held-out
validation case) written as an MR DICOM series -> dcmtk ``storescu`` -> ``osteo-node serve``
(the registered MR analyser, ONNX model, exporters) -> Orthanc, like CT does."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.integration.e2e_support import (
    analyze_json,
    assert_sr_matches_json,
    check_no_phi,
    identified_copies,
    run_series_through_node,
)
from tests.integration.orthanc import OrthancServer, orthanc_fixture  # noqa: F401
from tests.node.support import REPO
from tests.pipeline.mr.dicom_series import sagittal_case, write_series

MR_MODEL = REPO / "ai_models" / "mr_vertebral_bodies" / "model.json"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk not installed"),
    pytest.mark.skipif(not MR_MODEL.is_file(), reason="MR model not present in ai_models/"),
]


def test_sagittal_mri_series_to_orthanc(tmp_path: Path, shared_data: Path,
                                        orthanc: OrthancServer) -> None:
    vb = shared_data / "mr" / "vertebral_bodies"
    # vb3_25 is in the fixed validation split (ai_models/mr_vertebral_bodies/split.json).
    case = sagittal_case(vb / "vb3_25_image.nii.gz", vb / "vb3_25_label.nii.gz",
                         slab=4, shape_rc=(512, 512), pixel_mm=0.6)
    written = write_series(case, tmp_path / "written")
    files = identified_copies(written, tmp_path / "sent")
    _, objects, log = run_series_through_node(tmp_path, orthanc, files)
    analysis = analyze_json(tmp_path / "sent", tmp_path / "analysis.json")
    assert analysis["status"] == "analysed" and analysis["modality"] == "MR"
    assert [v["level"] for v in analysis["vertebrae"]] == ["L1", "L2", "L3", "L4", "L5"]
    assert all(v["trabecular_hu"] is None for v in analysis["vertebrae"])
    assert len(objects["MR"]) == len(files)
    assert len(objects["SR"]) == 1 and len(objects["SEG"]) == 1 and len(objects["OT"]) == 1
    assert_sr_matches_json(orthanc.fetch_instance(objects["SR"][0]), analysis)
    check_no_phi(log)
