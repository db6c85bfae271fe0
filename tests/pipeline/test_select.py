"""Series selection rules on real headers (edited copies in memory; the function is pure)."""

from __future__ import annotations

import copy
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset

from osteo_node.pipeline.stages.select import SelectionRules, default_rules_path, select_series
from tests.pipeline.ct_fixtures import CHEST, J2K


@pytest.fixture(scope="module")
def rules() -> SelectionRules:
    return SelectionRules.load(default_rules_path())


@pytest.fixture(scope="module")
def chest(shared_data: Path) -> list[Dataset]:
    files = sorted((shared_data / CHEST).iterdir())
    return [pydicom.dcmread(f, stop_before_pixels=True) for f in files]


def variant(headers: list[Dataset], uid: str, **changes: object) -> list[Dataset]:
    out = []
    for ds in headers:
        d = copy.deepcopy(ds)
        d.SeriesInstanceUID = uid
        for k, v in changes.items():
            setattr(d, k, v)
        out.append(d)
    return out


def test_real_chest_series_accepted(chest: list[Dataset], rules: SelectionRules) -> None:
    sel = select_series(chest, rules)
    assert sel.chosen is not None and sel.chosen.n_slices == 141
    assert sel.chosen.accepted and sel.chosen.reasons == ()
    assert sel.chosen.coverage_mm == pytest.approx(280.0)


def test_real_jpeg2000_slices_with_empty_uids_accepted(shared_data: Path,
                                                       rules: SelectionRules) -> None:
    hs = [pydicom.dcmread(f, stop_before_pixels=True)
          for f in sorted((shared_data / J2K).iterdir())]
    sel = select_series(hs, rules)
    assert sel.chosen is not None and sel.chosen.n_slices == 20
    assert sel.chosen.kernel == "Br38f" and sel.chosen.kernel_class == "soft"


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"]}, "LOCALIZER"),
        ({"ImageType": ["DERIVED", "SECONDARY", "AXIAL"]}, "is not ORIGINAL/PRIMARY"),
        ({"SeriesDescription": "Dose Report"}, "'dose report'"),
        ({"Modality": "MR"}, "modality MR"),
        ({"SOPClassUID": "1.2.840.10008.5.1.4.1.1.7"}, "not a CT image slice stack"),
        ({"GantryDetectorTilt": 12.0}, "gantry tilt 12 deg"),
        ({"SliceThickness": 7.5}, "slice thickness 7.5 mm"),
        ({"ImageOrientationPatient": [1, 0, 0, 0, 0, -1]}, "not axial"),
    ],
)
def test_rejections_have_reasons(chest: list[Dataset], rules: SelectionRules,
                                 changes: dict[str, object], reason: str) -> None:
    sel = select_series(variant(chest, "1.2.3.4", **changes), rules)
    assert sel.chosen is None
    assert reason in sel.reason
    assert sel.candidates[0].reasons


def test_small_tilt_tolerated(chest: list[Dataset], rules: SelectionRules) -> None:
    tilted = variant(chest, "1.2.3.5", ImageOrientationPatient=[1, 0, 0, 0, 0.9962, -0.0872])
    assert select_series(tilted, rules).chosen is not None  # 5 deg oblique axial


def test_too_few_slices_and_short_coverage(chest: list[Dataset], rules: SelectionRules) -> None:
    sel = select_series(chest[:10], rules)
    assert sel.chosen is None
    assert "only 10 slice(s) (minimum 16)" in sel.reason
    assert "covers only 18 mm" in sel.reason
    assert select_series(chest[:20], rules).chosen is not None  # 38 mm: partial but usable


def test_preference_soft_kernel_then_thinnest(chest: list[Dataset], rules: SelectionRules) -> None:
    soft = variant(chest, "1.1", ConvolutionKernel="B30f", SliceThickness=3.0)
    sharp = variant(chest, "1.2", ConvolutionKernel="B70f", SliceThickness=1.0)
    thin_soft = variant(chest, "1.3", ConvolutionKernel="B31f", SliceThickness=2.0)
    localizer = variant(chest[:1], "1.4", ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"])
    sel = select_series([*sharp, *soft, *localizer, *thin_soft], rules)
    assert sel.chosen is not None and sel.chosen.series_instance_uid == "1.3"
    by_uid = {c.series_instance_uid: c for c in sel.candidates}
    assert by_uid["1.2"].accepted and by_uid["1.2"].kernel_class == "sharp"
    assert not by_uid["1.4"].accepted
    assert select_series([*sharp, *soft], rules).chosen.series_instance_uid == "1.1"  # type: ignore[union-attr]


def test_rules_are_data(tmp_path: Path) -> None:
    text = default_rules_path().read_text().replace("min_slices: 16", "min_slices: 200")
    (tmp_path / "r.yaml").write_text(text)
    assert SelectionRules.load(tmp_path / "r.yaml").min_slices == 200
    bad = text.replace("gantry_tilt_action: refuse", "gantry_tilt_action: ignore")
    (tmp_path / "b.yaml").write_text(bad)
    with pytest.raises(ValueError, match="not supported"):
        SelectionRules.load(tmp_path / "b.yaml")


def test_a_localizer_inside_a_good_series_is_left_out(chest: list[Dataset],
                                                     rules: SelectionRules) -> None:
    """Issue 16 (9): one localizer (another ImageType, orientation and matrix) inside the real
    axial chest series used to block it ('mixed stacks'). It is left out with a warning and
    the stack is selected."""
    scout = copy.deepcopy(chest[10])
    scout.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    scout.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
    scout.Rows, scout.Columns = 512, 888
    odd = copy.deepcopy(chest[20])
    odd.Rows = 256  # another matrix
    headers = [*chest, scout, odd]
    sel = select_series(headers, rules)
    assert sel.chosen is not None, sel.reason
    assert sel.chosen.n_slices == len(chest)
    assert sorted(sel.chosen.excluded) == [
        "1 image(s) left out of the stack: another orientation, matrix or pixel spacing",
        "1 image(s) left out of the stack: localizer"]
    assert len(headers) - 2 not in sel.chosen.indices and len(headers) - 1 not in \
        sel.chosen.indices
