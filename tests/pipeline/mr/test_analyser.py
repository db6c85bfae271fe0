"""The MR analyser end to end on REAL held-out MRI (validation split, never trained on).

- NIfTI validation volumes: per-body Dice, detection and heights vs the manual masks;
- one validation volume written as a sagittal MR DICOM series (4 mm slabs, 512 x 512 pixels
  of 0.6 mm, T2 TSE header) next to a non-sagittal series: selection, loading, segmentation,
  levels, heights, grades, JSON schema;
- refusal of a series that is not sagittal.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from osteo_node.pipeline.mr.analyser import MRAnalyser
from osteo_node.pipeline.mr.evaluate import score_case, summarise
from osteo_node.pipeline.registry import analyser_for
from tests.pipeline.mr.dicom_series import (
    MrProtocol,
    reference_for_volume,
    sagittal_case,
    write_series,
)

SPLIT = Path(__file__).resolve().parents[3] / "ai_models" / "mr_vertebral_bodies" / "split.json"
# Thresholds the shipped model reaches on these held-out cases (see the model card for all 15).
MIN_MEAN_DICE = 0.90  # reached: vb2_09 0.93, vb3_25 0.91 (NIfTI), 0.91 (DICOM series)
MIN_FOUND = 1.0
MAX_MEDIAN_HEIGHT_ERROR_MM = 2.0


@pytest.fixture(scope="module")
def analyser() -> MRAnalyser:
    return MRAnalyser()


def _vb(shared_data: Path) -> Path:
    return shared_data / "mr" / "vertebral_bodies"


def test_registered_for_mr() -> None:
    a = analyser_for("MR")
    assert isinstance(a, MRAnalyser)


def test_validation_cases_are_held_out() -> None:
    split = json.loads(SPLIT.read_text())
    assert not set(split["val"]) & set(split["train"])
    for case in ("vb2_09", "vb3_25"):
        assert case in split["val"]


@pytest.mark.parametrize(("case", "levels"), [
    ("vb2_09", ["T11", "T12", "L1", "L2", "L3", "L4", "L5"]),
    ("vb3_25", ["L1", "L2", "L3", "L4", "L5"]),
])
def test_validation_volume_dice_detection_heights(
    shared_data: Path, analyser: MRAnalyser, case: str, levels: list[str]
) -> None:
    out = analyser.analyse([_vb(shared_data) / f"{case}_image.nii.gz"])
    assert out.result.status == "analysed", out.result.reason
    assert out.volume is not None
    ref = sitk.GetArrayFromImage(sitk.ReadImage(str(_vb(shared_data) / f"{case}_label.nii.gz")))
    score = score_case(case, out, ref.astype(np.int32), out.volume.geometry, levels)
    summary = summarise([score])
    assert summary["found_fraction"] >= MIN_FOUND, score
    assert summary["mean_body_dice"] >= MIN_MEAN_DICE, score
    assert summary["height_median_abs_error_mm_all"] <= MAX_MEDIAN_HEIGHT_ERROR_MM, score
    assert summary["levels_correct_fraction_of_named"] == 1.0, score
    for v in out.result.vertebrae:
        assert v.trabecular_hu is None


def _axial_copy(case: object) -> object:
    """Same pixels, headers of an axial stack (only the selection looks at it)."""
    return dataclasses.replace(case, slice_dir_lps=np.array([0.0, 0.0, 1.0]))  # type: ignore[type-var]


def _save_overlay(image: np.ndarray, labels: np.ndarray, path: Path) -> None:
    """Mid-sagittal slice with the bodies tinted (for a person to look at)."""
    from PIL import Image

    k = image.shape[0] // 2
    grey = np.clip(image[k] / max(float(np.percentile(image, 99)), 1.0) * 255, 0, 255)
    rgb = np.stack([grey] * 3, axis=-1)
    body = labels[k] > 0
    rgb[body] = rgb[body] * 0.5 + np.array([160.0, 40.0, 40.0])
    Image.fromarray(rgb.astype(np.uint8)).save(path)


def test_real_mri_as_sagittal_dicom_series_end_to_end(
    shared_data: Path, analyser: MRAnalyser, tmp_path: Path, artifacts_dir: Path
) -> None:
    case = sagittal_case(
        _vb(shared_data) / "vb3_25_image.nii.gz", _vb(shared_data) / "vb3_25_label.nii.gz",
        slab=4, shape_rc=(512, 512), pixel_mm=0.6,
    )
    study = "1.2.826.0.1.3680043.8.498.1"
    write_series(case, tmp_path / "sag", study_uid=study)
    write_series(_axial_copy(case), tmp_path / "ax", study_uid=study,  # type: ignore[arg-type]
                 iop=(1, 0, 0, 0, 1, 0), protocol=MrProtocol(description="T2 TSE AX"))
    out = analyser.analyse([tmp_path])
    r = out.result
    assert r.status == "analysed", r.reason
    assert r.modality == "MR"
    assert r.study_instance_uid == study
    assert any(w.startswith("series: sagittal T2") for w in r.warnings), r.warnings
    assert any("not sagittal: axial" in w for w in r.warnings), r.warnings
    assert r.model is not None
    assert r.model.sha256 == analyser.model.manifest.sha256
    assert out.volume is not None
    assert out.volume.array.shape == (case.image.shape[0], 512, 512)
    assert len(out.volume.sources) == case.image.shape[0]
    assert [v.level for v in r.vertebrae] == ["L1", "L2", "L3", "L4", "L5"]
    assert out.labels is not None
    _save_overlay(out.volume.array, out.labels.array, artifacts_dir / "mr_dicom_vb3_25_overlay.png")
    ref = reference_for_volume(case, out.volume.geometry)
    score = score_case("vb3_25-dicom", out, ref, out.volume.geometry,
                       ["L1", "L2", "L3", "L4", "L5"])
    summary = summarise([score])
    assert summary["found_fraction"] == 1.0, score
    assert summary["mean_body_dice"] >= MIN_MEAN_DICE - 0.01, score
    assert summary["height_median_abs_error_mm_all"] <= MAX_MEDIAN_HEIGHT_ERROR_MM, score
    for v in r.vertebrae:
        assert v.heights_mm is not None
        assert v.genant_grade is not None
        assert v.trabecular_hu is None
    doc = r.to_json()
    assert doc["modality"] == "MR"
    assert doc["findings"]["osteoporosis_suspected"] is None
    assert doc["label_map"] == {v.level: v.label_value for v in r.vertebrae}
    assert "disclaimer" in doc
    json.dumps(doc)


def test_only_axial_series_is_refused_with_reason(
    shared_data: Path, analyser: MRAnalyser, tmp_path: Path
) -> None:
    case = sagittal_case(
        _vb(shared_data) / "vb3_25_image.nii.gz", _vb(shared_data) / "vb3_25_label.nii.gz",
        slab=4,
    )
    write_series(_axial_copy(case), tmp_path, iop=(1, 0, 0, 0, 1, 0))  # type: ignore[arg-type]
    out = analyser.analyse([tmp_path])
    assert out.result.status == "not_analysable"
    assert "no suitable sagittal spine MR series" in (out.result.reason or "")
    assert "not sagittal: axial" in (out.result.reason or "")


def test_garbage_input_is_refused_not_raised(analyser: MRAnalyser, tmp_path: Path) -> None:
    (tmp_path / "x.dcm").write_bytes(b"not dicom")
    out = analyser.analyse([tmp_path])
    assert out.result.status == "not_analysable"
    assert out.result.reason == "no DICOM instances found"


def test_linear_intensity_rescale_changes_nothing(
    shared_data: Path, analyser: MRAnalyser, tmp_path: Path
) -> None:
    """Per-volume percentile normalisation: a linear rescale gives the same bodies."""
    from osteo_node.pipeline.mr.evaluate import intensity_copy

    image = _vb(shared_data) / "vb3_25_image.nii.gz"
    a = analyser.analyse([image])
    b = analyser.analyse([intensity_copy(image, "scale", tmp_path)])
    assert a.labels is not None
    assert b.labels is not None
    assert np.array_equal(a.labels.array, b.labels.array)
    assert [v.heights_mm for v in a.result.vertebrae] == [v.heights_mm for v in b.result.vertebrae]


def test_sequence_from_header_is_reported(
    shared_data: Path, analyser: MRAnalyser, tmp_path: Path
) -> None:
    """A STIR header (TI 150 ms) is recognised and reported (pixels: the same real T2 case)."""
    case = sagittal_case(
        _vb(shared_data) / "vb2_09_image.nii.gz", _vb(shared_data) / "vb2_09_label.nii.gz",
        slab=4,
    )
    stir = MrProtocol(tr_ms=4000, te_ms=60, ti_ms=150, description="SAG SPINE")
    write_series(case, tmp_path, protocol=stir)
    out = analyser.analyse([tmp_path])
    assert out.result.status == "analysed", out.result.reason
    assert any(w.startswith("series: sagittal STIR (inversion recovery with short TI")
               for w in out.result.warnings), out.result.warnings


def test_partial_coverage_gives_relative_labels_and_flags_cut_bodies(
    shared_data: Path, analyser: MRAnalyser, tmp_path: Path
) -> None:
    """A series that starts inside L2 and ends inside L5: no L5 anchor, cut bodies flagged.

    (The lower half of L5 is only partly segmented and dropped as a fragment; the field of view
    ending inside it must still prevent naming the lowest whole body "L5".)
    """
    case = sagittal_case(
        _vb(shared_data) / "vb3_25_image.nii.gz", _vb(shared_data) / "vb3_25_label.nii.gz",
        slab=4,
    )
    rows_l2 = np.flatnonzero((case.labels == 2).any(axis=(0, 2)))
    rows_l5 = np.flatnonzero((case.labels == 5).any(axis=(0, 2)))
    top = int(rows_l2[len(rows_l2) // 2])
    bottom = int(rows_l5[len(rows_l5) // 2])
    cropped = dataclasses.replace(
        case,
        image=np.ascontiguousarray(case.image[:, top:bottom]),
        labels=np.ascontiguousarray(case.labels[:, top:bottom]),
        first_pixel_lps=case.first_pixel_lps + np.array([0.0, 0.0, -case.pixel_mm[0] * top]),
    )
    write_series(cropped, tmp_path)
    out = analyser.analyse([tmp_path])
    r = out.result
    assert r.status == "analysed", r.reason
    names = [v.level for v in r.vertebrae]
    assert names[:3] == ["V1", "V2", "V3"], names
    assert any("relative labels V1..Vn" in w and "lower edge of the field of view" in w
               for w in r.warnings), r.warnings
    assert any(w.startswith("partial coverage: V1") for w in r.warnings), r.warnings
    assert r.vertebrae[0].heights_mm is None  # upper half of L2
    for v in r.vertebrae[1:3]:  # L3, L4 complete
        assert v.heights_mm is not None
        assert v.genant_grade == 0
