"""MR series selection and sequence recognition from DICOM headers."""

from __future__ import annotations

from typing import Any

import pytest
from pydicom.dataset import Dataset

from osteo_node.pipeline.mr.select import (
    ENHANCED_MR_STORAGE,
    MR_IMAGE_STORAGE,
    orientation_of,
    select_mr_series,
)
from osteo_node.pipeline.mr.sequence import classify_sequence

SAGITTAL = [0, 1, 0, 0, 0, -1]
AXIAL = [1, 0, 0, 0, 1, 0]
CORONAL = [1, 0, 0, 0, 0, -1]


def header(
    uid: str = "1.2.3.1",
    n: int = 0,
    iop: list[float] | None = None,
    **kw: Any,
) -> Dataset:
    ds = Dataset()
    ds.Modality = kw.pop("Modality", "MR")
    ds.SOPClassUID = kw.pop("SOPClassUID", MR_IMAGE_STORAGE)
    ds.SeriesInstanceUID = uid
    ds.ImageOrientationPatient = iop or SAGITTAL
    normal_step = [4.0 * n, 0, 0] if (iop or SAGITTAL) == SAGITTAL else [0, 0, 4.0 * n]
    ds.ImagePositionPatient = normal_step
    ds.PixelSpacing = kw.pop("PixelSpacing", [0.6, 0.6])
    ds.Rows = ds.Columns = 512
    ds.SliceThickness = kw.pop("SliceThickness", "4")
    ds.ImageType = kw.pop("ImageType", ["ORIGINAL", "PRIMARY", "M", "NORM"])
    for k, v in kw.items():
        setattr(ds, k, v)
    return ds


def series(uid: str, count: int = 15, **kw: Any) -> list[Dataset]:
    return [header(uid, n, **kw) for n in range(count)]


T2 = {"RepetitionTime": "3500", "EchoTime": "96", "ScanningSequence": ["SE"],
      "SeriesDescription": "t2_tse_sag"}
T1 = {"RepetitionTime": "550", "EchoTime": "11", "ScanningSequence": ["SE"],
      "SeriesDescription": "t1_tse_sag"}
STIR = {"RepetitionTime": "4000", "EchoTime": "60", "InversionTime": "160",
        "ScanningSequence": ["SE", "IR"], "SequenceName": "*tir2d1_17",
        "SeriesDescription": "sag spine"}


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (T2, "T2"),
        (T1, "T1"),
        (STIR, "STIR"),
        ({"SeriesDescription": "t2_tirm_sag", "RepetitionTime": "3000", "EchoTime": "50"}, "STIR"),
        ({"RepetitionTime": "9000", "EchoTime": "90", "InversionTime": "2500",
          "ScanningSequence": ["IR"]}, "FLAIR"),
        ({"RepetitionTime": "3000", "EchoTime": "12"}, "PD"),
        ({"RepetitionTime": "3000", "EchoTime": "70", "ImageType": ["DERIVED", "PRIMARY",
                                                                  "DIFFUSION", "TRACEW"]}, "DWI"),
        ({"RepetitionTime": "7", "EchoTime": "2.4", "ScanningSequence": ["GR"],
          "FlipAngle": "3"}, "GRE"),
        ({"SeriesDescription": "sag T1W"}, "T1"),
        ({"SeriesDescription": "spine sag"}, "unknown"),
    ],
)
def test_sequence_recognised_from_header(fields: dict[str, Any], expected: str) -> None:
    info = classify_sequence(header(**dict(fields)))
    assert info.weighting == expected, info
    assert info.evidence


def test_sagittal_t2_accepted_axial_refused_with_reason() -> None:
    headers = series("1.2.3.10", **T2) + series("1.2.3.20", iop=AXIAL, **T2)
    sel = select_mr_series(headers)
    assert sel.chosen is not None
    assert sel.chosen.series_instance_uid == "1.2.3.10"
    assert sel.chosen.orientation == "sagittal"
    assert sel.chosen.sequence.weighting == "T2"
    axial = next(c for c in sel.candidates if c.series_instance_uid == "1.2.3.20")
    assert not axial.accepted
    assert any("not sagittal: axial slices" in r for r in axial.reasons), axial.reasons


def test_preference_t2_then_t1_then_stir() -> None:
    headers = series("1.2.3.3", **STIR) + series("1.2.3.1", **T1) + series("1.2.3.2", **T2)
    assert select_mr_series(headers).chosen.sequence.weighting == "T2"  # type: ignore[union-attr]
    headers = series("1.2.3.3", **STIR) + series("1.2.3.1", **T1)
    assert select_mr_series(headers).chosen.sequence.weighting == "T1"  # type: ignore[union-attr]
    chosen = select_mr_series(series("1.2.3.3", **STIR)).chosen
    assert chosen is not None
    assert chosen.sequence.weighting == "STIR"


def test_slightly_oblique_sagittal_is_sagittal() -> None:
    import math

    a = math.radians(12)
    iop = [math.sin(a), math.cos(a), 0, 0, 0, -1]
    plane, angle, _ = orientation_of(header(iop=iop))
    assert plane == "sagittal"
    assert angle == pytest.approx(12, abs=0.1)
    assert select_mr_series([header("9", n, iop=iop, **T2) for n in range(12)]).chosen is not None


@pytest.mark.parametrize(
    ("headers", "fragment"),
    [
        (series("1", iop=CORONAL, **T2), "not sagittal: coronal slices"),
        (series("1", Modality="CT", **T2), "modality CT is not MR"),
        (series("1", SOPClassUID=ENHANCED_MR_STORAGE, **T2), "Enhanced MR"),
        (series("1", ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"], **T2), "LOCALIZER"),
        (series("1", count=3, **T2), "only 3 slice(s)"),
        (series("1", SliceThickness="8", **T2), "slice thickness 8 mm"),
        (series("1", RepetitionTime="3000", EchoTime="12"), "sequence PD"),
        (series("1", SeriesDescription="spine"), "sequence unknown"),
        (series("1", PixelSpacing=[0.1, 0.1], **T2), "field of view 51 mm"),
    ],
)
def test_refusals_have_reasons(headers: list[Dataset], fragment: str) -> None:
    sel = select_mr_series(headers)
    assert sel.chosen is None
    assert fragment in sel.reason, sel.reason
    assert sel.reason.startswith("no suitable sagittal spine MR series")


def test_mixed_orientations_in_one_series_refused() -> None:
    headers = series("7", 8, **T2) + series("7", 8, iop=AXIAL, **T2)
    sel = select_mr_series(headers)
    assert sel.chosen is None
    assert "different orientations" in sel.reason
