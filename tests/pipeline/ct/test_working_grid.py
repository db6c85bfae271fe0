"""The coarse canonical grid on real CT: orientation, block averaging, body crop, resampling,
and the segment stage's contract."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from osteo_node.pipeline.ct.working_grid import (
    block_mean,
    body_box,
    resample_image,
)
from osteo_node.pipeline.ct.working_grid import to_canonical_grid as to_model_grid
from osteo_node.pipeline.sitk_io import geometry_of, resample_labels, to_sitk
from osteo_node.pipeline.stages.volume import load_dicom_series, load_nifti

EX = "ct/totalseg_example/example_ct.nii.gz"


def test_canonical_grid_of_a_ras_nifti_is_an_exact_flip(shared_data: Path) -> None:
    """example_ct is RAS at 3 mm: on the 3 mm LPS-aligned grid it is the same voxels, flipped."""
    vol = load_nifti(shared_data / EX).volume
    hu, geo = to_model_grid(vol, 3.0)
    assert geo.direction == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    assert hu.shape == vol.array.shape
    # input direction is diag(-1, -1, 1) in LPS: i and j are reversed on the canonical grid
    assert np.allclose(np.diag(vol.geometry.matrix), (-1.0, -1.0, 1.0))
    np.testing.assert_allclose(hu, vol.array[:, ::-1, ::-1], atol=1e-3)
    # the same physical point has the same HU on both grids
    ijk = np.array([40.0, 50.0, 60.0])
    lps = vol.geometry.index_to_lps(ijk)
    c = np.rint(geo.lps_to_index(lps)).astype(int)
    assert hu[c[2], c[1], c[0]] == pytest.approx(vol.array[60, 50, 40], abs=1e-3)


def test_block_mean_matches_simpleitk_binshrink(shared_data: Path) -> None:
    vol = load_dicom_series(shared_data / "ct/totalseg_example/dicom").volume
    arr, geo = block_mean(vol, (3, 3, 1))
    img = sitk.GetImageFromArray(vol.array)
    img.SetSpacing(vol.geometry.spacing)
    img.SetOrigin(vol.geometry.origin)
    img.SetDirection(vol.geometry.direction)
    ref = sitk.BinShrink(img, [3, 3, 1])
    np.testing.assert_allclose(arr, sitk.GetArrayFromImage(ref), rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(geo.origin, ref.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(geo.spacing, ref.GetSpacing(), atol=1e-6)


@pytest.mark.parametrize("storage", ["RAS", "PIR", "SAL", "ILP"])
def test_model_grid_does_not_depend_on_storage_order(shared_data: Path, storage: str) -> None:
    """The same physical image stored in another axis order gives the same model-grid voxels.

    The real TPTBox crop (sagittal-stored NIfTI, 1.5 mm, odd sizes) is block-averaged by 2: the
    blocks must start at the same physical corner whatever the storage order, or the network
    sees a half-voxel-shifted, differently blurred image (found end to end: the NIfTI and the
    same voxels written as an axial DICOM series gave different vertebrae).
    """
    import dataclasses

    vol = load_nifti(shared_data / "ct/tptbox_sample/sub-ct_label-22_ct.nii.gz").volume
    img = to_sitk(vol.array, vol.geometry)
    lps = sitk.DICOMOrient(img, "LPS")
    other = sitk.DICOMOrient(img, storage)
    ref_hu, ref_geo = to_model_grid(dataclasses.replace(
        vol, array=sitk.GetArrayFromImage(lps), geometry=geometry_of(lps)), 3.0)
    hu, geo = to_model_grid(dataclasses.replace(
        vol, array=sitk.GetArrayFromImage(other), geometry=geometry_of(other)), 3.0)
    assert hu.shape == ref_hu.shape
    np.testing.assert_allclose(geo.origin, ref_geo.origin, atol=1e-4)
    np.testing.assert_allclose(hu, ref_hu, atol=1e-3)


def test_body_box_keeps_the_spine_and_drops_air(shared_data: Path) -> None:
    vol = load_nifti(shared_data / EX).volume
    hu, geo = to_model_grid(vol, 3.0)
    box = body_box(hu)
    inside = np.zeros(hu.shape, dtype=bool)
    inside[box] = True
    ref = sitk.ReadImage(str(shared_data / "ct/totalseg_example/example_ct_vertebrae.nii.gz"))
    spine = resample_labels(ref, geo, hu.shape) > 0  # type: ignore[arg-type]
    assert spine.sum() > 1000
    assert inside[spine].all()
    assert inside.sum() < inside.size  # some air was cropped
    assert (hu[~inside] > -400).mean() < 0.05  # what is left out is (nearly) all air / table


def test_segment_for_analysis_returns_the_analyser_contract(shared_data: Path) -> None:
    from osteo_node.pipeline.ct.analyser import Segmentation
    from osteo_node.pipeline.ct.segment import segment_for_analysis

    vol = load_nifti(shared_data / "ct/tptbox_sample/sub-ct_label-22_ct.nii.gz").volume
    seg = segment_for_analysis(vol)
    assert isinstance(seg, Segmentation)
    assert seg.model is not None
    assert seg.model.execution_provider in ("CPUExecutionProvider", "CUDAExecutionProvider")
    assert seg.labels.array.shape == vol.array.shape
    assert seg.bodies is not None
    assert seg.bodies.shape == vol.array.shape
    assert set(np.unique(seg.bodies)) - {0} <= set(seg.labels.levels.values())


@pytest.mark.parametrize("spacing", [(0.8, 0.8, 1.6), (0.7, 0.7, 1.25), (1.5, 1.5, 0.9)])
def test_model_grid_for_any_spacing_mix(shared_data: Path, spacing: tuple[float, float, float]
                                        ) -> None:
    """Anti-aliasing that only some axes need (0.8 mm pixels with 1.6 mm slices: the slices are
    smoothed, the block-averaged pixels are not) must work; SimpleITK's recursive Gaussian refused
    a zero sigma on one axis and crashed the analysis for such series."""
    from dataclasses import replace

    vol = load_nifti(shared_data / EX).volume
    small = replace(vol, geometry=replace(vol.geometry, spacing=spacing))
    hu, geo = to_model_grid(small, 3.0)
    assert geo.spacing == (3.0, 3.0, 3.0)
    assert np.isfinite(hu).all()
    assert hu.max() > 300.0  # bone survives the smoothing


def test_thin_slab_does_not_end_in_air_on_the_model_grid(shared_data: Path) -> None:
    """The canonical grid's outermost samples lie in the outer half of the edge voxels: they
    take the edge voxels' values. Before, linear resampling put air (the default) there, so the
    20-slice slab ended in an air slice the scan does not have, and the TPTBox crop had air on
    three faces."""
    for path, loader in (("ct/totalseg_example/dicom", load_dicom_series),
                         ("ct/tptbox_sample/sub-ct_label-22_ct.nii.gz", load_nifti)):
        vol = loader(shared_data / path).volume
        hu, _ = to_model_grid(vol, 3.0)
        for axis in range(3):
            for edge in (0, -1):
                face = np.take(hu, edge, axis=axis)
                inner = np.take(hu, 1 if edge == 0 else -2, axis=axis)
                # where the scan cuts through the patient (the slab's top and bottom, every face
                # of the crop), the face has about as much tissue as the next slice in (before:
                # none at all, 0.0 vs 0.75 at the slab's top)
                tissue, inner_tissue = float(np.mean(face > -1000)), float(np.mean(inner > -1000))
                if inner_tissue > 0.5:
                    assert tissue >= 0.9 * inner_tissue, (path, axis, edge, tissue, inner_tissue)


def test_resample_fills_only_beyond_half_a_voxel_with_the_default() -> None:
    """Edge voxels are repeated once: up to one voxel beyond the last voxel centre a point gets
    the edge value, further out the default."""
    from osteo_node.pipeline.types import Geometry

    arr = np.full((4, 3, 3), 100.0, dtype=np.float32)
    arr[-1] = 300.0  # the top slice
    src = Geometry(origin=(0.0, 0.0, 0.0), spacing=(1.0, 1.0, 2.0),
                   direction=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    dst = Geometry(origin=(1.0, 1.0, 4.0), spacing=(1.0, 1.0, 1.0),
                   direction=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    out = resample_image(to_sitk(arr, src), dst, (6, 1, 1), default=-1024.0, antialias=False)
    # z = 4, 5, 6 (last centre), 7 (half a voxel out), 8 (one voxel out), 9 (beyond)
    np.testing.assert_allclose(out[:, 0, 0], [100.0, 200.0, 300.0, 300.0, 300.0, -1024.0],
                               atol=1e-3)
