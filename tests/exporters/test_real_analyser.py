"""Issue 3 acceptance 3 at the object level: the REAL CT analyser (select, volume, measure,
phase, grade) runs on the 20 real CT slices with the reference labels injected as its
segmentation (a fake for the model, which this test is not about); the SR built from its output
carries exactly the values of ``analyze``'s JSON (``AnalysisResult.to_json``)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

from osteo_node.exporters.publish import build_objects, write_objects
from osteo_node.exporters.sr import read_report
from osteo_node.pipeline.results import AnalysisOutput, ModelInfo
from osteo_node.pipeline.types import LabelVolume, Volume
from tests.exporters.conftest import TOTALSEG_LEVELS, _fill_uids, labels_on_grid

pytestmark = pytest.mark.shared_data


@pytest.fixture(scope="module")
def analysed(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> AnalysisOutput:
    analyser_mod = pytest.importorskip("osteo_node.pipeline.ct.analyser")
    base = shared_data / "ct" / "totalseg_example"
    paths = _fill_uids(base / "dicom", tmp_path_factory.mktemp("ct20_real"))

    def reference_segmentation(volume: Volume) -> object:
        lab = labels_on_grid(base / "dicom_seg_reference.nii.gz", volume)
        arr = np.zeros_like(lab.array)
        verse = {"T11": 18, "T12": 19}
        for level, ts_value in TOTALSEG_LEVELS.items():
            arr[lab.array == ts_value] = verse[level]
        labels = LabelVolume(arr, volume.geometry, verse, {k: 1.0 for k in verse})
        return analyser_mod.Segmentation(labels, arr.copy(), ModelInfo(
            "reference-labels", "test", "0" * 64, "none"))

    out: AnalysisOutput = analyser_mod.CTAnalyser(reference_segmentation).analyse(paths)
    assert out.result.status == "analysed", out.result.reason
    return out


def test_sr_equals_analyze_json(analysed: AnalysisOutput, tmp_path: Path) -> None:
    objs = build_objects(analysed, uid_root=None, job_key="real-analyser-ct20")
    kinds = sorted(o.kind for o in objs)
    assert kinds == ["sc", "seg", "sr"]  # not flagged: no KOS
    paths = {p.name.split("_")[0]: p for p in write_objects(objs, tmp_path)}
    parsed = read_report(pydicom.dcmread(paths["sr"]))
    js = analysed.result.to_json()
    assert sorted(parsed.vertebrae) == sorted(v["level"] for v in js["vertebrae"])
    for v in js["vertebrae"]:
        p = parsed.vertebrae[v["level"]]
        hu = v["trabecular_hu"]
        assert (p.values.get("hu_mean"), p.values.get("hu_sd")) == (
            (hu["mean"], hu["sd"]) if hu else (None, None))
        heights = v["heights_mm"] or {}
        for key in ("anterior", "middle", "posterior"):
            assert p.values.get(f"{key}_height") == heights.get(key)
        assert p.values.get("height_loss") == v["height_loss"]
        assert p.genant_grade == v["genant_grade"]
        assert p.morphology == v["morphology"]
    f = js["findings"]
    assert parsed.density_hu == f["l1_hu"] and parsed.density_level == f["density_level"]
    assert parsed.osteoporosis_suspected == f["osteoporosis_suspected"]
    assert parsed.contrast_phase == js["contrast_phase"]
    exe = shutil.which("dciodvfy")
    if exe is not None:
        for kind, path in paths.items():
            proc = subprocess.run([exe, str(path)], capture_output=True, text=True,
                                  timeout=120, check=False)
            errors = [ln for ln in (proc.stdout + proc.stderr).splitlines()
                      if ln.startswith("Error")]
            assert not errors, (kind, proc.stdout + proc.stderr)
