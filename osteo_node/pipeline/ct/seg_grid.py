"""Resampling between an input grid and the segmentation model's canonical grid.

The model works on a *canonical* grid: isotropic spacing (``model.json`` ``spacing_mm``), axes
aligned with the patient (LPS) axes, array ``[k, j, i]`` = ``[S, P, L]`` increasing. Any input
orientation (including small gantry tilts and NIfTI RAS files) is brought onto it by SimpleITK,
so the network always sees the same anatomy layout. The same functions are used by the training
data preparation (``ai_models/ct_vertebrae/prepare_data.py``) and at run time. The
Geometry <-> SimpleITK conversions (``to_sitk``, ``geometry_of``, ``resample_labels``) live in
``osteo_node.pipeline.sitk_io`` and are re-exported here for the callers of this module.
"""

from __future__ import annotations

import math

import numpy as np
import SimpleITK as sitk
from numpy.typing import NDArray
from scipy import ndimage

from osteo_node.pipeline.sitk_io import geometry_of, grid_image, resample_labels, to_sitk
from osteo_node.pipeline.types import Geometry

__all__ = [
    "canonical_geometry",
    "geometry_of",
    "resample_image",
    "resample_labels",
    "to_sitk",
]

IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def canonical_geometry(geometry: Geometry, shape_kji: tuple[int, ...], spacing: float) -> tuple[
    Geometry, tuple[int, int, int]
]:
    """Axis-aligned LPS grid at ``spacing`` mm covering the physical extent of the input grid.

    Returns the geometry and the array shape ``(k, j, i)``.
    """
    nk, nj, ni = shape_kji
    corners = np.array(
        [[i, j, k] for i in (-0.5, ni - 0.5) for j in (-0.5, nj - 0.5) for k in (-0.5, nk - 0.5)],
        dtype=np.float64,
    )
    lps = geometry.index_to_lps(corners)
    lo, hi = lps.min(axis=0), lps.max(axis=0)
    size = [max(1, math.ceil((hi[a] - lo[a]) / spacing)) for a in range(3)]
    origin = lo + spacing / 2.0
    geo = Geometry(
        origin=(float(origin[0]), float(origin[1]), float(origin[2])),
        spacing=(spacing, spacing, spacing),
        direction=IDENTITY,
    )
    return geo, (size[2], size[1], size[0])


def _antialias_sigmas(spacing_in: tuple[float, ...], spacing_out: tuple[float, ...]) -> list[float]:
    """Gaussian sigma (mm) per axis so that a fine grid resembles a scan reconstructed coarser."""
    sig = []
    for s_in, s_out in zip(spacing_in, spacing_out, strict=True):
        extra = s_out * s_out - s_in * s_in
        sig.append(math.sqrt(extra) / 2.355 if extra > 0 and s_out > 1.5 * s_in else 0.0)
    return sig


def _smooth(img: sitk.Image, sigmas_mm: list[float]) -> sitk.Image:
    """Gaussian smoothing with a per-axis sigma in mm; an axis with sigma 0 is left untouched.

    (SimpleITK's recursive Gaussian refuses a zero sigma on any axis, and which axes need
    anti-aliasing depends on the input spacing, e.g. 0.8 mm pixels with 1.6 mm slices.)
    """
    arr = sitk.GetArrayFromImage(img).astype(np.float32, copy=False)
    sig_vox = [s / sp for s, sp in zip(sigmas_mm, img.GetSpacing(), strict=True)]
    out = ndimage.gaussian_filter(arr, sigma=sig_vox[::-1], mode="nearest", truncate=3.0)
    res = sitk.GetImageFromArray(out)
    res.CopyInformation(img)
    return res


def resample_image(
    img: sitk.Image,
    geo: Geometry,
    shape_kji: tuple[int, int, int],
    *,
    default: float,
    antialias: bool = True,
) -> NDArray[np.float32]:
    """Linear resampling of an intensity image onto ``geo`` (float32 ``[k, j, i]``).

    Points up to one voxel beyond the edge voxels' centres take the edge value, points further
    out ``default``. The canonical grid covers the image's physical extent, so its outermost
    samples lie in the outer half of the edge voxels; a thin slab or a tight crop must not end
    in a slice of ``default`` (air) that is not in the scan.
    """
    if antialias:
        sig = _antialias_sigmas(img.GetSpacing(), geo.spacing)
        if max(sig) > 0:
            img = _smooth(img, sig)
    img = sitk.ZeroFluxNeumannPad(img, [1, 1, 1], [1, 1, 1])  # edge voxels repeated once
    out = sitk.Resample(
        img, grid_image(geo, shape_kji), sitk.Transform(), sitk.sitkLinear, default,
        sitk.sitkFloat32,
    )
    return sitk.GetArrayFromImage(out)
