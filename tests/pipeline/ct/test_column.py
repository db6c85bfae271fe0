"""The spinal canal tracked through REAL CT (classical, no training data), checked against the
reference vertebrae: on every slice with a labelled vertebra, the tracked point lies within the
vertebra's outline (left-right and front-back extent of its label on that slice) and not in
its bone (the canal is the hole of the ring)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from osteo_node.pipeline.ct.column import find_canal
from osteo_node.pipeline.ct.references import reference_label_volume
from osteo_node.pipeline.stages.volume import load_dicom_series, load_nifti

CASES = [
    ("ct/totalseg_example/example_ct.nii.gz", "ct/totalseg_example/example_ct_vertebrae.nii.gz",
     "totalseg"),
    ("ct/totalseg_dataset/s0003_ct.nii.gz", "ct/totalseg_dataset/s0003_vertebrae.nii.gz",
     "totalseg_dataset"),
    ("ct/totalseg_dataset/s0002_ct.nii.gz", "ct/totalseg_dataset/s0002_vertebrae.nii.gz",
     "totalseg_dataset"),
    ("ct/tptbox_sample/sub-ct_label-22_ct.nii.gz",
     "ct/tptbox_sample/sub-ct_seg-vert_label-22_msk.nii.gz", "verse"),
]


@pytest.mark.parametrize(("image", "labels", "numbering"), CASES,
                         ids=[c[0].split("/")[-1] for c in CASES])
def test_canal_runs_through_the_vertebral_rings(shared_data: Path, image: str, labels: str,
                                                numbering: str) -> None:
    vol = load_nifti(shared_data / image).volume
    canal = find_canal(vol)
    assert canal is not None
    ref = reference_label_volume(shared_data / labels, numbering, vol.geometry,
                                 vol.array.shape)
    # reference voxels in patient coordinates, by axial height (2 mm bins)
    idx = np.argwhere(ref.array > 0)
    lps = vol.geometry.index_to_lps(idx[:, ::-1].astype(np.float64))
    vals = ref.array[tuple(idx.T)]
    checked = inside = 0
    for z in np.arange(canal.z_mm[0], canal.z_mm[-1], 2.0):
        near = np.abs(lps[:, 2] - z) <= 1.0
        if near.sum() < 200:
            continue
        x, y = canal.at(z)
        pts, v = lps[near], vals[near]
        ring = pts[v == np.bincount(v).argmax()]  # the vertebra of this slice
        checked += 1
        in_x = ring[:, 0].min() - 2 <= x <= ring[:, 0].max() + 2
        in_y = ring[:, 1].min() - 2 <= y <= ring[:, 1].max() + 2
        in_bone = (np.linalg.norm(pts[:, :2] - [x, y], axis=1) <= 1.5).any()
        inside += bool(in_x and in_y and not in_bone)
    assert checked >= 10
    assert inside / checked >= 0.9, (inside, checked)


def test_chest_canal_spans_the_whole_series(shared_data: Path) -> None:
    """The complete chest series: the spine runs through every slice, so does the canal."""
    vol = load_dicom_series(shared_data / "ct/chest_ct_series/dicom").volume
    canal = find_canal(vol)
    assert canal is not None
    assert canal.length_mm >= 0.95 * 140 * 2.0
    assert float(np.median(canal.score)) > 0.7
