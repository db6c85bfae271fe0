"""The evaluation harness (osteo-node evaluate) on real labelled cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from osteo_node.cli.main import main
from osteo_node.pipeline.ct.analyser import Segmentation
from osteo_node.pipeline.ct.evaluation import Case, ReferenceSpec, reference_segment_fn, score_case
from osteo_node.pipeline.types import LabelVolume, Volume

REPO = Path(__file__).resolve().parents[2]

TS = "ct/totalseg_example"


def example_case(root: Path) -> Case:
    return Case("example_ct", root / TS / "example_ct.nii.gz", ReferenceSpec(
        root / TS / "vertebrae_pp_refined.nii.gz", "verse", root / TS / "vertebrae_body.nii.gz",
        (1,)))


def test_reference_against_itself_is_perfect(shared_data: Path) -> None:
    case = example_case(shared_data)
    s = score_case(case, reference_segment_fn(case.reference))
    assert s.level_accuracy == 1.0 and s.mean_dice == pytest.approx(1.0)
    assert s.body_reference == "given" and s.mean_centroid_error == pytest.approx(0.0)
    # same body: the analyser's ROI is the central core (roi_depth_fraction), the reference the
    # body eroded by 3 mm, which keeps denser bone near the cortex: a few HU apart, no more
    assert s.hu_difference("L1") == pytest.approx(0.0, abs=5.0)
    assert s.grade_agreement == 1.0


def test_misnamed_levels_are_caught(shared_data: Path) -> None:
    """Same masks, every name shifted one level up: level accuracy 0, Dice still high."""
    case = example_case(shared_data)
    ref_fn = reference_segment_fn(case.reference)

    def shifted(volume: Volume) -> Segmentation:
        seg = ref_fn(volume)
        arr = np.where(seg.labels.array > 0, seg.labels.array - 1, 0).astype(np.uint8)
        names = {"T11": 18, "T12": 19, "L1": 20, "L2": 21, "L3": 22, "L4": 23}
        assert seg.bodies is not None
        return Segmentation(LabelVolume(arr, volume.geometry, names), seg.bodies, seg.model)

    s = score_case(case, shifted)
    assert s.level_accuracy == 0.0
    assert s.mean_centroid_error is not None and s.mean_centroid_error > 25.0
    assert len(s.extra_levels) == 1 and s.extra_levels[0].startswith("T11 (nearest reference T12")


def test_evaluate_command(shared_data: Path, capsys: pytest.CaptureFixture[str],
                          tmp_path: Path) -> None:
    import yaml

    # the shared-data cases of the default list, and the chest case with its reference (made
    # by make_chest_reference.py, not in the repository) missing: skipped with the path
    listing = yaml.safe_load((REPO / "benchmarks" / "ct_cases.yaml").read_text())
    for case in listing["cases"]:
        if case["name"] == "chest_pseudo":
            case["reference"] = {**case["reference"],
                                 "vertebrae": "./absent/chest_ct_vertebrae.nii.gz"}
    cases = tmp_path / "cases.yaml"
    cases.write_text(yaml.safe_dump(listing))
    code = main(["--log-level", "WARNING", "evaluate", str(cases), "--reference-segmentation",
                 "--data", str(shared_data), "--json", str(tmp_path / "s.json")])
    assert code == 0
    out = capsys.readouterr().out
    # every labelled case; the reference against itself: every level found and named,
    # identical bodies (given or derived from the whole-vertebra labels)
    assert "OVERALL (36 reference levels): level accuracy 1.00, body Dice 1.000" in out
    assert f"chest_pseudo: skipped, {tmp_path / 'absent' / 'chest_ct_vertebrae.nii.gz'} " \
        "not found" in out
    for case in ("example_ct", "contrast_slab", "tptbox", "s0009", "s0003", "s0002"):
        assert f"-> {case}: level accuracy 1.00, body Dice 1.000" in out, case
    # the neck CTs have no vertebra between T4 and L5 to grade: said so, still scored
    assert "s0003            NOT ANALYSABLE: no vertebra between T4 and L5" in out


def test_case_list_paths_and_training_data_cases(tmp_path: Path) -> None:
    """Shared-data paths are relative to the data folder, ``./`` paths to the case list (a
    reference kept in the repository); ``held_out: false`` marks training data."""
    import yaml

    from osteo_node.pipeline.ct.evaluation import load_cases

    listing = tmp_path / "cases.yaml"
    listing.write_text(yaml.safe_dump({"cases": [
        {"name": "a", "input": "ct/a.nii.gz", "reference": {"vertebrae": "ct/a_seg.nii.gz"}},
        {"name": "chest", "input": "ct/chest/dicom", "held_out": False,
         "reference": {"vertebrae": "./references/v.nii.gz", "bodies": "./references/b.nii.gz",
                       "numbering": "verse"}},
    ]}))
    a, chest = load_cases(listing, Path("/data"))
    assert a.input == Path("/data/ct/a.nii.gz") and a.held_out and a.fold == "a"
    assert chest.input == Path("/data/ct/chest/dicom") and not chest.held_out
    assert chest.reference.vertebrae == tmp_path / "references" / "v.nii.gz"
    assert chest.reference.bodies == tmp_path / "references" / "b.nii.gz"
