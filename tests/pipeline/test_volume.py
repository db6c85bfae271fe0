"""DICOM / NIfTI volume loading on real data (geometry vs headers, HU, refusals)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from osteo_node.pipeline.stages.volume import (
    VolumeError,
    list_files,
    load_dicom,
    load_dicom_series,
    load_nifti,
    read_headers,
)
from tests.pipeline.ct_fixtures import CHEST, J2K, link_series, rewrite


def test_jpeg2000_slices_any_file_names(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / J2K
    files = link_series(src, tmp_path / "j2k", names=lambda n, f: f"x{(n * 7) % 20:03d}")
    assert pydicom.dcmread(files[0]).file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.90"
    loaded = load_dicom_series(tmp_path / "j2k")
    v = loaded.volume
    assert v.array.shape == (20, 512, 512) and v.array.dtype == np.float32
    zs = sorted(float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2])
                for f in files)
    assert v.geometry.origin == pytest.approx((-249.51171875, -437.51171875, zs[0]))
    assert v.geometry.spacing == pytest.approx((0.9765625, 0.9765625, 2.0))
    # last slice maps to the highest position; HU: air about -1000, bone well above 300
    assert v.geometry.index_to_lps((0, 0, 19))[2] == pytest.approx(zs[-1])
    assert -1030 <= float(np.percentile(v.array, 1)) <= -900
    assert float(v.array.max()) > 1000
    assert len(v.sources) == 20 and v.sources[0].sop_class_uid == "1.2.840.10008.5.1.4.1.1.2"
    assert v.study_instance_uid is None and v.series_instance_uid is None  # empty in the data


def test_chest_series_spacing_from_positions(shared_data: Path) -> None:
    files = list_files(shared_data / CHEST)
    headers, skipped = read_headers(files)
    assert len(headers) == 141 and not skipped
    assert float(headers[0].ds.SpacingBetweenSlices) == -2.0  # the quirk
    loaded = load_dicom(headers)
    v = loaded.volume
    assert v.geometry.spacing[2] == pytest.approx(2.0)
    assert v.geometry.origin[2] == pytest.approx(-164.5)  # lowest slice first
    assert v.geometry.index_to_lps((0, 0, 140))[2] == pytest.approx(115.5)
    # slice k really is the file at that position (rescale intercept -1024 applied)
    ds = pydicom.dcmread(headers[0].path)
    k = round((float(ds.ImagePositionPatient[2]) + 164.5) / 2.0)
    expected = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(
        ds.RescaleIntercept)
    np.testing.assert_array_equal(v.array[k], expected)
    assert v.sources[k].sop_instance_uid == ds.SOPInstanceUID
    assert v.header is not None and "PixelData" not in v.header
    assert not any("SpacingBetweenSlices" in w for w in loaded.warnings)


def test_missing_rescale_refused(shared_data: Path, tmp_path: Path) -> None:
    files = link_series(shared_data / CHEST, tmp_path / "s", keep=lambda n: n < 30)

    def drop(ds: pydicom.Dataset) -> None:
        del ds.RescaleIntercept
        del ds.RescaleSlope

    rewrite(files[5], drop)
    with pytest.raises(VolumeError, match="RescaleSlope/RescaleIntercept missing"):
        load_dicom_series(tmp_path / "s")


def test_duplicate_positions_detected(shared_data: Path, tmp_path: Path) -> None:
    files = link_series(shared_data / CHEST, tmp_path / "s", keep=lambda n: n < 30)

    def new_uid(ds: pydicom.Dataset) -> None:
        ds.SOPInstanceUID = pydicom.uid.generate_uid()

    rewrite(files[10], new_uid, dst=tmp_path / "s" / "copy_of_10.dcm")
    with pytest.raises(VolumeError, match="duplicate slice positions"):
        load_dicom_series(tmp_path / "s")


def test_irregular_spacing_detected(shared_data: Path, tmp_path: Path) -> None:
    link_series(shared_data / CHEST, tmp_path / "s", keep=lambda n: n < 40 and n not in (20, 21))
    with pytest.raises(VolumeError, match=r"irregular slice spacing: gap of 6\.00 mm"):
        load_dicom_series(tmp_path / "s")


def test_mixed_orientation_refused(shared_data: Path, tmp_path: Path) -> None:
    files = link_series(shared_data / CHEST, tmp_path / "s", keep=lambda n: n < 20)

    def tilt(ds: pydicom.Dataset) -> None:
        ds.ImageOrientationPatient = [1, 0, 0, 0, 0.9961947, -0.0871557]

    rewrite(files[3], tilt)
    with pytest.raises(VolumeError, match="different ImageOrientationPatient"):
        load_dicom_series(tmp_path / "s")


def test_sheared_stack_refused(shared_data: Path, tmp_path: Path) -> None:
    """Gantry tilt: positions move along y as well as z (real slices, headers edited)."""
    files = link_series(shared_data / CHEST, tmp_path / "s", keep=lambda n: n < 20)
    for f in files:
        def shear(ds: pydicom.Dataset) -> None:
            x, y, z = (float(v) for v in ds.ImagePositionPatient)
            ds.ImagePositionPatient = [x, y + 0.2679 * (z - 115.5), z]  # 15 deg
        rewrite(f, shear)
    with pytest.raises(VolumeError, match="sheared slice stack"):
        load_dicom_series(tmp_path / "s")


def test_nifti_is_lps(shared_data: Path, tmp_path: Path) -> None:
    import nibabel as nib

    path = shared_data / "ct/totalseg_example/example_ct.nii.gz"
    v = load_nifti(path).volume
    img = nib.load(str(path))
    ras = img.affine @ np.array([10, 20, 30, 1.0])  # nibabel voxel (i, j, k) -> RAS
    lps = v.geometry.index_to_lps((10, 20, 30))
    np.testing.assert_allclose(lps, [-ras[0], -ras[1], ras[2]], atol=1e-3)
    data = np.asarray(img.dataobj)
    assert v.array[30, 20, 10] == pytest.approx(float(data[10, 20, 30]))
    bad = tmp_path / "broken.nii.gz"
    shutil.copy(path, bad)
    bad.write_bytes(bad.read_bytes()[:1000])
    with pytest.raises(VolumeError, match="cannot read NIfTI"):
        load_nifti(bad)
