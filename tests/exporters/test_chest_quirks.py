"""The real 141-slice chest CT series has real-world header quirks: SpacingBetweenSlices -2.0,
a malformed Philips private element that pydicom cannot decode, empty (de-identified) patient
name and ID. The exporters must still produce valid objects. Labels are a crude FAKE (bone
voxels in 12 boxes along the spine, named T1..T12), because this test is about the headers, not
about segmentation; the result is a fixture consistent with those labels."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

from osteo_node.exporters.publish import build_objects, write_objects
from osteo_node.exporters.sr import read_report
from osteo_node.pipeline.results import (
    AnalysisOutput,
    AnalysisResult,
    Findings,
    Heights,
    ModelInfo,
    TrabecularHU,
    VertebraResult,
)
from osteo_node.pipeline.types import LabelVolume

pytestmark = [pytest.mark.shared_data, pytest.mark.slow]
LEVELS = [f"T{i}" for i in range(1, 13)]


@pytest.fixture(scope="module")
def chest_output(shared_data: Path) -> AnalysisOutput:
    volume_mod = pytest.importorskip("osteo_node.pipeline.stages.volume")
    folder = shared_data / "ct" / "chest_ct_series" / "dicom"
    headers, _ = volume_mod.read_headers(volume_mod.list_files(folder))
    vol = volume_mod.load_dicom(headers).volume
    nk = vol.array.shape[0]
    arr = np.zeros(vol.array.shape, np.uint8)
    bone = vol.array > 200
    for n, _level in enumerate(LEVELS):  # head (high k) to feet
        box = np.zeros_like(bone)
        box[nk - (n + 1) * nk // 12: nk - n * nk // 12, 250:330, 220:290] = True
        arr[bone & box] = n + 1
    labels = LabelVolume(arr, vol.geometry, {lv: n + 1 for n, lv in enumerate(LEVELS)})
    vertebrae = []
    for n, level in enumerate(LEVELS):
        mask = arr == n + 1
        kji = np.argwhere(mask).mean(axis=0)
        c = vol.geometry.index_to_lps(kji[::-1])
        hu = vol.array[mask]
        vertebrae.append(VertebraResult(
            level, 0.5, n + 1, (float(c[0]), float(c[1]), float(c[2])),
            TrabecularHU(round(float(hu.mean()), 1), round(float(np.median(hu)), 1),
                         round(float(hu.std()), 1), int(hu.size)),
            Heights(20.0, 19.5, 21.0), 0.07, "normal", 0))
    result = AnalysisResult(
        "analysed", None, "CT", vol.study_instance_uid, vol.series_instance_uid, "native",
        ModelInfo("fixture", "0", "0" * 64, "CPUExecutionProvider"), vertebrae,
        Findings(False, vertebrae[-1].trabecular_hu.mean, "T12"))  # type: ignore[union-attr]
    return AnalysisOutput(result, vol, labels)


def test_chest_objects_valid(chest_output: AnalysisOutput, tmp_path: Path) -> None:
    objs = build_objects(chest_output, uid_root=None, job_key="chest-quirks")
    assert sorted(o.kind for o in objs) == ["sc", "seg", "sr"]
    paths = write_objects(objs, tmp_path)
    exe = shutil.which("dciodvfy")
    for path in paths:
        ds = pydicom.dcmread(path)
        assert str(ds.PatientName) == "" and ds.PatientID == ""
        assert ds.StudyInstanceUID == chest_output.result.study_instance_uid
        if exe is not None:
            proc = subprocess.run([exe, str(path)], capture_output=True, text=True,
                                  timeout=300, check=False)
            text = proc.stdout + proc.stderr
            assert not [ln for ln in text.splitlines() if ln.startswith("Error")], text
    sr = next(p for p in paths if p.name.startswith("sr_"))
    parsed = read_report(pydicom.dcmread(sr))
    assert sorted(parsed.vertebrae) == sorted(LEVELS)
    for v in chest_output.result.vertebrae:
        assert v.trabecular_hu is not None
        assert parsed.vertebrae[v.level].values["hu_mean"] == v.trabecular_hu.mean
