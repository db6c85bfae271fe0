"""SR / SEG / SC from REAL MR analyses: named levels (L1..L5) and relative labels (V1..Vn, when
the lumbosacral junction is not in view) both export, pass dciodvfy and parse back."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import numpy as np
import pytest

from osteo_node.exporters.publish import build_objects, write_objects
from osteo_node.exporters.sr import read_report
from osteo_node.pipeline.mr.analyser import MRAnalyser
from osteo_node.pipeline.results import AnalysisOutput
from tests.pipeline.mr.dicom_series import sagittal_case, write_series

pytestmark = pytest.mark.shared_data


def _case(shared_data: Path) -> object:
    vb = shared_data / "mr" / "vertebral_bodies"
    return sagittal_case(vb / "vb3_25_image.nii.gz", vb / "vb3_25_label.nii.gz", slab=4)


@pytest.fixture(scope="module")
def mr_outputs(shared_data: Path, tmp_path_factory: pytest.TempPathFactory
               ) -> dict[str, AnalysisOutput]:
    analyser = MRAnalyser()
    case = _case(shared_data)
    full = tmp_path_factory.mktemp("mr_full")
    write_series(case, full)  # type: ignore[arg-type]
    # The same real series cut from mid-L2 to mid-L5: no anchor -> relative labels V1..Vn.
    rows_l2 = np.flatnonzero((case.labels == 2).any(axis=(0, 2)))  # type: ignore[attr-defined]
    rows_l5 = np.flatnonzero((case.labels == 5).any(axis=(0, 2)))  # type: ignore[attr-defined]
    top, bottom = int(rows_l2[len(rows_l2) // 2]), int(rows_l5[len(rows_l5) // 2])
    cut = dataclasses.replace(
        case,  # type: ignore[type-var]
        image=np.ascontiguousarray(case.image[:, top:bottom]),  # type: ignore[attr-defined]
        labels=np.ascontiguousarray(case.labels[:, top:bottom]),  # type: ignore[attr-defined]
        first_pixel_lps=case.first_pixel_lps  # type: ignore[attr-defined]
        + np.array([0.0, 0.0, -case.pixel_mm[0] * top]),  # type: ignore[attr-defined]
    )
    partial = tmp_path_factory.mktemp("mr_partial")
    write_series(cut, partial)
    return {"named": analyser.analyse([full]), "relative": analyser.analyse([partial])}


@pytest.mark.parametrize("which", ["named", "relative"])
def test_mr_results_export_and_verify(mr_outputs: dict[str, AnalysisOutput], which: str,
                                      tmp_path: Path) -> None:
    out = mr_outputs[which]
    r = out.result
    assert r.status == "analysed", r.reason
    levels = [v.level for v in r.vertebrae]
    assert (levels[0] == "V1") == (which == "relative"), levels
    objects = build_objects(out, uid_root=None, job_key=f"mr-{which}")
    kinds = sorted(o.kind for o in objects)
    assert {"sr", "seg", "sc"} <= set(kinds), kinds
    by_kind = {o.kind: o for o in objects}
    seg = hd.seg.Segmentation.from_dataset(by_kind["seg"].dataset)
    assert len(seg.SegmentSequence) == len(r.vertebrae)
    report = read_report(by_kind["sr"].dataset)
    assert sorted(report.vertebrae) == sorted(levels)
    for v in r.vertebrae:
        if v.heights_mm is not None and v.heights_mm.posterior is not None:
            got = report.vertebrae[v.level].values["posterior_height"]
            assert got == pytest.approx(v.heights_mm.posterior, abs=1e-3)
    exe = shutil.which("dciodvfy")
    if exe is None:
        pytest.skip("dicom3tools dciodvfy not installed")
    for path in write_objects(objects, tmp_path):
        proc = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=120,
                              check=False)
        errors = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith("Error")]
        assert not errors, (path.name, proc.stdout + proc.stderr)
