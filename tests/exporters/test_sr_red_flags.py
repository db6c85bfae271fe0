"""The SR carries the patient assessment's pathological-fracture red flags: a coded
"Possible pathological fracture" yes/no in the image-level group and one comment line per flag
with the recommended action. Built from the realistic real-CT fixture; dciodvfy-clean."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path

import pytest

from osteo_node.exporters.publish import build_objects, write_objects
from osteo_node.exporters.sr import read_report
from osteo_node.pipeline.results import AnalysisOutput

pytestmark = pytest.mark.shared_data

LYTIC = {"reference_hu": 110.0, "spread_hu": 18.0, "lytic_cluster_mm3": 1500.0,
         "sclerotic_cluster_mm3": 0.0, "voxels": 900, "focal_lytic": True,
         "focal_sclerotic": False, "heterogeneous": False}


def _texts(items: object) -> list[str]:
    out: list[str] = []
    for item in items:  # type: ignore[attr-defined]
        if getattr(item, "ValueType", "") == "TEXT":
            out.append(str(item.TextValue))
        if "ContentSequence" in item:
            out.extend(_texts(item.ContentSequence))
    return out


def _sr(output: AnalysisOutput, key: str) -> object:
    return next(o for o in build_objects(output, uid_root=None, job_key=key) if o.kind == "sr")


def test_red_flags_in_sr(ct20_output: AnalysisOutput, tmp_path: Path) -> None:
    r = ct20_output.result
    level = r.vertebrae[0].level
    flagged = AnalysisOutput(
        dataclasses.replace(r, vertebrae=[dataclasses.replace(r.vertebrae[0], texture=LYTIC),
                                          *r.vertebrae[1:]]),
        ct20_output.volume, ct20_output.labels)
    sr_flag = _sr(flagged, "flagged")
    parsed = read_report(sr_flag.dataset)  # type: ignore[attr-defined]
    assert parsed.pathological_fracture_suspected is True
    text = "\n".join(_texts(sr_flag.dataset.ContentSequence))  # type: ignore[attr-defined]
    assert f"focal lytic area in {level}" in text and "oncology work-up" in text
    assert read_report(_sr(ct20_output, "plain").dataset  # type: ignore[attr-defined]
                       ).pathological_fracture_suspected is False
    exe = shutil.which("dciodvfy")
    if exe is None:
        pytest.skip("dicom3tools dciodvfy not installed")
    [path] = write_objects([sr_flag], tmp_path)  # type: ignore[list-item]
    proc = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=120,
                          check=False)
    errors = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith("Error")]
    assert not errors, proc.stdout + proc.stderr
