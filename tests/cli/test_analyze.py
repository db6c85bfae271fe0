"""``osteo-node analyze`` command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from osteo_node.cli.main import main
from tests.pipeline.ct_fixtures import CHEST, link_series


def test_not_analysable_json_and_exit_code(shared_data: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    link_series(shared_data / CHEST, tmp_path / "short", keep=lambda n: n < 8)
    out = tmp_path / "r.json"
    code = main(["--log-format", "console", "analyze", str(tmp_path / "short"),
                 "--json", str(out), "--png", str(tmp_path / "x.png")])
    assert code == 3
    d = json.loads(out.read_text())
    assert d["status"] == "not_analysable" and "only 8 slice(s)" in d["reason"]
    assert d["disclaimer"].startswith("Decision support only")
    err = capsys.readouterr().err
    assert "[select]" in err and "--png not written" in err
    assert not (tmp_path / "x.png").exists()


def test_missing_path(tmp_path: Path) -> None:
    assert main(["analyze", str(tmp_path / "nope")]) == 2


def _model_available() -> bool:
    from osteo_node.models import ModelError
    from osteo_node.pipeline.ct.sagittal_net import default_model

    try:
        default_model()
    except (ModelError, OSError):  # model not shipped: skip the end-to-end CLI run
        return False
    return True


@pytest.mark.slow
def test_analyze_nifti_end_to_end(shared_data: Path, tmp_path: Path, artifacts_dir: Path) -> None:
    if not _model_available():
        pytest.skip("CT vertebra model not available")
    import SimpleITK as sitk

    j, seg = tmp_path / "r.json", tmp_path / "s.nii.gz"
    png = artifacts_dir / "analyze_example_ct.png"
    code = main(["analyze", str(shared_data / "ct/totalseg_example/example_ct.nii.gz"),
                 "--json", str(j), "--png", str(png), "--seg", str(seg)])
    d = json.loads(j.read_text())
    assert code == 0, d["reason"]
    assert {"T12", "L1", "L2", "L3", "L4", "L5"} <= {v["level"] for v in d["vertebrae"]}
    img = sitk.ReadImage(str(seg))
    src = sitk.ReadImage(str(shared_data / "ct/totalseg_example/example_ct.nii.gz"))
    assert img.GetSize() == src.GetSize()
    assert img.GetOrigin() == pytest.approx(src.GetOrigin(), abs=1e-3)
    values = set(int(v) for v in set(sitk.GetArrayViewFromImage(img).ravel().tolist())) - {0}
    assert values == set(d["label_map"].values())
    assert png.stat().st_size > 10_000


def test_mr_through_analyze_shows_progress_and_refuses_ct_rules(
        shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """MR goes through the MR analyser with the same progress lines; --rules (CT selection
    rules) is refused for MR instead of being silently ignored."""
    image = shared_data / "mr/vertebral_bodies/vb3_25_image.nii.gz"
    out = tmp_path / "mr.json"
    code = main(["--log-format", "console", "analyze", str(image), "--modality", "MR",
                 "--json", str(out)])
    assert code in (0, 3)
    assert json.loads(out.read_text())["modality"] == "MR"
    err = capsys.readouterr().err
    assert "[select] modality MR" in err
    assert "[segment]" in err or "[load]" in err or "[measure]" in err, err
    rules = tmp_path / "rules.yaml"
    rules.write_text("min_slices: 5\n")
    assert main(["analyze", str(image), "--modality", "MR", "--rules", str(rules)]) == 2
    assert "--rules holds CT series selection rules" in capsys.readouterr().err
