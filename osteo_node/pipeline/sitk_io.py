"""Geometry <-> SimpleITK: the one place where a ``[k, j, i]`` array and its LPS Geometry become
a SimpleITK image, and an image's grid becomes a Geometry again.

SimpleITK's image order is (i, j, k) with origin / spacing / direction in LPS, which is exactly
``Geometry`` (see ``types.py``); ``GetImageFromArray`` takes the ``[k, j, i]`` array as is.
Used by the CT and MR pipelines, the CLI and the evaluations.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from numpy.typing import NDArray

from osteo_node.pipeline.types import Geometry


def set_geometry(img: sitk.Image, geometry: Geometry) -> sitk.Image:
    """Give ``img`` the origin, spacing and direction of ``geometry`` (in place; returns it)."""
    img.SetOrigin(tuple(float(v) for v in geometry.origin))
    img.SetSpacing(tuple(float(v) for v in geometry.spacing))
    img.SetDirection(tuple(float(v) for v in geometry.direction))
    return img


def to_sitk(
    array: NDArray[np.generic], geometry: Geometry, *, vector: bool = False
) -> sitk.Image:
    """Wrap a ``[k, j, i]`` array (``[k, j, i, c]`` with ``vector``) with its geometry."""
    return set_geometry(sitk.GetImageFromArray(array, isVector=vector), geometry)


def geometry_of(img: sitk.Image) -> Geometry:
    """The Geometry of a SimpleITK image's grid."""
    return Geometry(
        origin=tuple(float(v) for v in img.GetOrigin()),  # type: ignore[arg-type]
        spacing=tuple(float(v) for v in img.GetSpacing()),  # type: ignore[arg-type]
        direction=tuple(float(v) for v in img.GetDirection()),
    )


def grid_image(geometry: Geometry, shape_kji: tuple[int, ...]) -> sitk.Image:
    """An empty (uint8) image on a grid: the reference of a ``sitk.Resample`` onto it."""
    size = [int(shape_kji[2]), int(shape_kji[1]), int(shape_kji[0])]
    return set_geometry(sitk.Image(size, sitk.sitkUInt8), geometry)


def resample_labels(
    img: sitk.Image, geometry: Geometry, shape_kji: tuple[int, ...]
) -> NDArray[np.generic]:
    """Nearest-neighbour resampling of a label image onto a grid (same pixel type, 0 outside)."""
    out = sitk.Resample(
        img, grid_image(geometry, shape_kji), sitk.Transform(), sitk.sitkNearestNeighbor, 0,
        img.GetPixelID(),
    )
    return sitk.GetArrayFromImage(out)
