"""The exported objects land in the ORIGINAL study in a real PACS: dcmtk storescu sends the 20
real CT slices (UIDs filled in) and the SR, SEG, SC and KOS to a real Orthanc (private network
namespace, loopback-only peer); Orthanc's REST API shows one study holding the CT series and the
four result series, and Orthanc keeps the objects' SOP Instance UIDs."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pydicom
import pytest

from osteo_node.exporters.publish import build_objects, write_objects
from osteo_node.pipeline.results import AnalysisOutput
from tests.exporters.conftest import STUDY_UID
from tests.integration.orthanc import OrthancServer, orthanc_fixture  # noqa: F401

pytestmark = [pytest.mark.shared_data, pytest.mark.integration]


def test_objects_in_original_study(orthanc: OrthancServer, ct20_output: AnalysisOutput,
                                   ct20_files: list[Path], tmp_path: Path) -> None:
    if shutil.which("storescu") is None:
        pytest.skip("dcmtk storescu not installed")
    objs = build_objects(ct20_output, uid_root=None, job_key="orthanc-ct20")
    # two associations: the JPEG 2000 CT slices (-xv), then the results, each in its own
    # transfer syntax (SR, SC, KOS Explicit VR LE; SEG JPEG 2000 lossless)
    for ts, files in (("-xv", ct20_files), ("-xv", write_objects(objs, tmp_path))):
        res = subprocess.run(["storescu", "-R", ts, "-aec", orthanc.aet, orthanc.host,
                              str(orthanc.dicom_port), *map(str, files)],
                             capture_output=True, text=True, timeout=180, check=False)
        assert res.returncode == 0, res.stdout + res.stderr
    studies = orthanc.studies()
    assert len(studies) == 1 and orthanc.study_uid(studies[0]) == STUDY_UID
    series = orthanc.series_of(studies[0])
    modalities = sorted(s["MainDicomTags"].get("Modality", "") for s in series)
    assert modalities == sorted(["CT", "SR", "SEG", "OT", "KO"]), modalities
    stored = set(orthanc.sop_instance_uids())
    for o in objs:
        assert o.sop_instance_uid in stored, o.kind
    sr_series = next(s for s in series if s["MainDicomTags"].get("Modality") == "SR")
    sr = orthanc.fetch_instance(sr_series["Instances"][0])
    assert sr.SeriesDescription.startswith("osteo-node")
    assert sr.StudyInstanceUID == STUDY_UID
    assert isinstance(sr, pydicom.Dataset)
