"""Real reference masks (../shared/data) as [k, j, i] arrays with their LPS Geometry."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from numpy.typing import NDArray

from osteo_node.pipeline.sitk_io import geometry_of, to_sitk
from osteo_node.pipeline.types import Geometry

TOTALSEG = "ct/totalseg_example"
VERSE = {"T12": 19, "L1": 20, "L2": 21, "L3": 22, "L4": 23, "L5": 24}


def read(path: Path, dtype: type = np.float32) -> tuple[NDArray[np.generic], Geometry]:
    img = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(img).astype(dtype), geometry_of(img)


@dataclass
class ExampleCT:
    image: NDArray[np.float32]
    vertebrae: NDArray[np.int32]
    bodies: NDArray[np.bool_]
    geometry: Geometry

    def vertebra(self, level: str) -> NDArray[np.bool_]:
        return self.vertebrae == VERSE[level]

    def body(self, level: str) -> NDArray[np.bool_]:
        return self.vertebra(level) & self.bodies


def example_ct(root: Path) -> ExampleCT:
    image, geo = read(root / TOTALSEG / "example_ct.nii.gz")
    vert, _ = read(root / TOTALSEG / "vertebrae_pp_refined.nii.gz", np.int32)
    body, _ = read(root / TOTALSEG / "vertebrae_body.nii.gz", np.int32)
    return ExampleCT(image.astype(np.float32), vert.astype(np.int32), body == 1, geo)


def resample_mask(mask: NDArray[np.bool_], geometry: Geometry, spacing: float
                  ) -> tuple[NDArray[np.bool_], Geometry]:
    """Crop a mask to its box (+margin) and resample it to ``spacing`` mm (linear, >= 0.5)."""
    idx = np.argwhere(mask)
    lo = np.maximum(idx.min(axis=0) - 3, 0)
    hi = np.minimum(idx.max(axis=0) + 4, mask.shape)
    crop = mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]].astype(np.float32)
    o = geometry.index_to_lps(lo[::-1].astype(float))
    img = to_sitk(crop, replace(geometry, origin=(float(o[0]), float(o[1]), float(o[2]))))
    size = [int(np.ceil(n * s / spacing)) for n, s in zip(img.GetSize(), img.GetSpacing(),
                                                           strict=True)]
    out = sitk.Resample(img, size, sitk.Transform(), sitk.sitkLinear, img.GetOrigin(),
                        (spacing,) * 3, img.GetDirection(), 0.0, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(out) >= 0.5, geometry_of(out)
