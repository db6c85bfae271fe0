"""A non-editable install (what systemd/osteo-node.service's instructions do) finds the models,
code tables and selection rules it ships, from outside the source tree."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from osteo_node.resources import SOURCE_ROOT, resource_path

REPO = Path(__file__).resolve().parents[1]


def test_lookup_order(tmp_path: Path) -> None:
    assert resource_path("dicom_sr_templates") == SOURCE_ROOT / "dicom_sr_templates"
    env = {"OSTEO_TEST_DIR": str(tmp_path)}
    assert resource_path("dicom_sr_templates", "OSTEO_TEST_DIR", env) == tmp_path
    assert resource_path("no/such/thing") == SOURCE_ROOT / "no/such/thing"


@pytest.mark.slow
def test_wheel_install_finds_shipped_data(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", "-w", str(wheels), str(REPO)],
                   check=True, capture_output=True, timeout=300)
    venv = tmp_path / "venv"
    base = Path(getattr(sys, "_base_executable", sys.executable))
    subprocess.run([str(base), "-m", "venv", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()"
                              "['purelib'])"], check=True, capture_output=True, text=True)
    # dependencies come from this environment; osteo_node itself only from the wheel
    (Path(purelib.stdout.strip()) / "deps.pth").write_text(
        sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                    *map(str, wheels.glob("*.whl"))], check=True, capture_output=True,
                   timeout=300)
    probe = (
        "import json, osteo_node\n"
        "from osteo_node.models import default_ct_model_dir\n"
        "from osteo_node.pipeline.mr.model import default_model_dir\n"
        "from osteo_node.pipeline.stages.select import default_rules_path\n"
        "from osteo_node.exporters.codes import templates_dir\n"
        "from osteo_node.store.schema import head_revision\n"
        "print(json.dumps([osteo_node.__file__, str(default_ct_model_dir()),\n"
        "    str(default_model_dir()), str(default_rules_path()), str(templates_dir()),\n"
        "    head_revision()]))\n"
    )
    out = subprocess.run([str(py), "-c", probe], cwd=tmp_path, check=True,
                         capture_output=True, text=True, timeout=120)
    module, ct, mr, rules, templates, head = json.loads(out.stdout)
    assert module.startswith(str(venv)), module
    share = venv / "share" / "osteo-node"
    assert Path(ct) == share / "ai_models/ct_sagittal" and (Path(ct) / "model.onnx").is_file()
    assert Path(mr) == share / "ai_models/mr_vertebral_bodies"
    assert Path(rules) == share / "config/series_selection.yaml"
    assert Path(templates) == share / "dicom_sr_templates"
    from osteo_node.store.schema import head_revision

    assert head == head_revision()  # the migrations ship in the wheel
