"""Pseudo-labelled reference of the real chest series, for the THORACIC fracture evaluation.

No labelled CT in the shared data has complete T4-T10 bodies; the chest series
(``ct/chest_ct_series``, 141 slices, C7-L1) does. Its reference here is the shipped model's
own segmentation (whole vertebrae as VerSe values, and the bodies), checked by eye on the PNG
this script writes. It is NOT independent of the network (its Dice against the network's own
output measures nothing), so ``benchmarks/ct_cases.yaml`` marks it ``held_out: false`` and
``osteo-node evaluate`` reports its numbers as training fit. What it measures: whether deformed
thoracic bodies of a real chest CT (deformations sized on this reference) are graded, and
whether its undeformed bodies stay ungraded (specificity on thoracic bodies). The chest series
itself is in no model's training data. The NIfTI files are written next to this script and
are not kept in the repository (git-ignored imaging data): run it before ``evaluate``.

    .venv/bin/python benchmarks/references/make_chest_reference.py
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from PIL import Image

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CHEST = "ct/chest_ct_series/dicom"


def main() -> int:
    sys.path.insert(0, str(REPO))
    from osteo_node.pipeline.ct.column_segmentation import segment_column
    from osteo_node.pipeline.ct.sagittal_net import default_model
    from osteo_node.pipeline.sitk_io import to_sitk
    from osteo_node.pipeline.stages.volume import load_dicom_series

    data = Path(os.environ.get("OSTEO_SHARED_DATA", REPO.parent / "shared" / "data"))
    volume = load_dicom_series(data / CHEST).volume
    model = default_model()
    seg = segment_column(volume, model)
    vert = np.asarray(seg.labels.array, dtype=np.uint8)
    bodies = (seg.bodies > 0).astype(np.uint8)
    sitk.WriteImage(to_sitk(vert, volume.geometry), str(HERE / "chest_ct_vertebrae.nii.gz"),
                    useCompression=True)
    sitk.WriteImage(to_sitk(bodies, volume.geometry), str(HERE / "chest_ct_bodies.nii.gz"),
                    useCompression=True)
    # check image: the sagittal plane through the body centres (rows = slices, top = cranial)
    cols = np.flatnonzero(bodies.any(axis=(0, 1)))
    i = int(np.median(np.argwhere(bodies)[:, 2])) if cols.size else vert.shape[2] // 2
    hu = np.clip((volume.array[:, :, i] + 200) / 1200, 0, 1)
    rgb = np.stack([hu] * 3, -1)
    rng = np.random.default_rng(0)
    colours = rng.random((64, 3)) * 0.7 + 0.3
    lab = vert[:, :, i]
    m = lab > 0
    rgb[m] = 0.55 * rgb[m] + 0.45 * colours[lab[m] % 64] * np.where(
        bodies[:, :, i][m] > 0, 1.0, 0.5)[:, None]
    sz, sy = volume.geometry.spacing[2], volume.geometry.spacing[1]
    img = Image.fromarray((rgb * 255).astype(np.uint8))
    z_up = volume.geometry.index_to_lps((0, 0, 1))[2] > volume.geometry.index_to_lps((0, 0, 0))[2]
    if z_up:
        img = img.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    img = img.resize((int(img.width * sy * 2), int(img.height * sz * 2)))
    img.save(HERE / "chest_ct_reference.png")
    print(f"levels {list(seg.labels.levels)} model {model.info.version} sha256 "
          f"{model.info.sha256[:12]} -> {HERE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
