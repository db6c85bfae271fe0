"""Build the training targets of the CT vertebra network from the real reference labels.

Level-agnostic classes (the same for every vertebra, so a few volumes teach them):
    0 background, 1 vertebral body, 2 posterior elements (rest of the vertebra),
    3 intervertebral disc, 4 sacrum (S1 as labelled by the reference).

Source (see ../shared/data/README.md): ``ct/totalseg_example/example_ct.nii.gz`` with
``example_ct_vertebrae.nii.gz`` (per vertebra, TotalSegmentator numbering, 26 = S1) and
``vertebrae_body.nii.gz`` (1 body, 2 disc). Everything is resampled onto the model's canonical
grid (axis-aligned LPS, ``SPACING_MM`` isotropic) with the runtime's own resampling code.

Held out on purpose (never read here): the 20 DICOM slices + ``dicom_seg_reference.nii.gz`` and the
TPTBox crop; they are the validation cases of the model card.
Not used: ``spinefe_verse004_L2`` (its image is masked to zero outside the vertebra and its discs
are artificial, so it teaches nothing about real context); ``chest_ct_series`` (no labels).

Usage:  .venv/bin/python ai_models/ct_vertebrae/prepare_data.py [--data ../shared/data]
Writes ``ai_models/ct_vertebrae/cache/train_example_ct.npz`` (git-ignored; derived imaging data
must not be committed).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from osteo_node.pipeline.ct.seg_grid import (
    canonical_geometry,
    geometry_of,
    resample_image,
    resample_labels,
)

SPACING_MM = 3.0
HERE = Path(__file__).resolve().parent
BACKGROUND, BODY, POSTERIOR, DISC, SACRUM = 0, 1, 2, 3, 4
TS_S1 = 26  # TotalSegmentator "total" numbering in example_ct_vertebrae


def build_example_ct(data: Path) -> dict[str, np.ndarray]:
    d = data / "ct" / "totalseg_example"
    ct = sitk.ReadImage(str(d / "example_ct.nii.gz"))
    vert = sitk.ReadImage(str(d / "example_ct_vertebrae.nii.gz"))
    body = sitk.ReadImage(str(d / "vertebrae_body.nii.gz"))
    arr = sitk.GetArrayFromImage(ct)
    geo, shape = canonical_geometry(geometry_of(ct), arr.shape, SPACING_MM)
    image = resample_image(ct, geo, shape, default=-1024.0)
    v = resample_labels(vert, geo, shape)
    b = resample_labels(body, geo, shape)
    target = np.zeros(shape, dtype=np.uint8)
    target[v > 0] = POSTERIOR
    target[b == 1] = BODY
    target[b == 2] = DISC
    target[v == TS_S1] = SACRUM
    return {
        "image": image.astype(np.float32),
        "target": target,
        "origin": np.asarray(geo.origin),
        "spacing": np.asarray(geo.spacing),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=HERE.parents[1].parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=HERE / "cache")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    sample = build_example_ct(args.data)
    np.savez_compressed(args.out / "train_example_ct.npz", **sample)
    counts = np.bincount(sample["target"].ravel(), minlength=5)
    print("example_ct", sample["image"].shape, "class voxels", counts.tolist())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
