"""The coarse axis-aligned grid the CT analysis starts on (canal tracking, rib search).

A *canonical* grid: isotropic spacing, axes aligned with the patient (LPS) axes, array
``[k, j, i]`` = ``[S, P, L]`` increasing. Any input orientation (small gantry tilts, sagittal
crops, NIfTI RAS files) is brought onto it: fine inputs are first block-averaged in LPS order
(cheap, anti-aliased, the same voxels whatever the storage order), then resampled linearly with
SimpleITK; :func:`crop_to_body` keeps the patient.
"""

from __future__ import annotations

import math

import numpy as np
import SimpleITK as sitk
from numpy.typing import NDArray
from scipy import ndimage

from osteo_node.pipeline.sitk_io import grid_image, to_sitk
from osteo_node.pipeline.types import Geometry, Volume

AIR_HU = -1024.0
BODY_THRESHOLD_HU = -400.0  # voxels above this belong to the patient (or the table)

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


def block_mean(volume: Volume, factors: tuple[int, int, int]) -> tuple[
    NDArray[np.float32], Geometry
]:
    """Average non-overlapping blocks of ``factors`` (i, j, k) voxels, slab by slab.

    Like SimpleITK's BinShrink (remainder voxels dropped) but without copying the whole input:
    peak memory stays near the input array itself. Returns the array and its geometry.
    """
    fi, fj, fk = factors
    nk, nj, ni = (d // f for d, f in zip(volume.array.shape, (fk, fj, fi), strict=True))
    out = np.empty((nk, nj, ni), dtype=np.float32)
    step = max(1, 32 // fk)
    for k0 in range(0, nk, step):
        k1 = min(nk, k0 + step)
        slab = volume.array[k0 * fk : k1 * fk, : nj * fj, : ni * fi]
        for axis, f in ((0, fk), (1, fj), (2, fi)):
            if f > 1:  # strided sums are ~3x faster than reshape(...).mean
                parts = [slab[(slice(None),) * axis + (slice(o, None, f),)] for o in range(f)]
                acc = parts[0].astype(np.float32, copy=True)
                for part in parts[1:]:
                    acc += part
                slab = acc
        out[k0:k1] = slab * np.float32(1.0 / (fi * fj * fk))
    g = volume.geometry
    origin = g.index_to_lps(np.array([(fi - 1) / 2, (fj - 1) / 2, (fk - 1) / 2]))
    geo = Geometry(
        origin=(float(origin[0]), float(origin[1]), float(origin[2])),
        spacing=(g.spacing[0] * fi, g.spacing[1] * fj, g.spacing[2] * fk),
        direction=g.direction,
    )
    return out, geo


def lps_ordered(array: NDArray[np.float32], geometry: Geometry) -> tuple[
    NDArray[np.float32], Geometry
]:
    """The same image with its array axes flipped/permuted (numpy views, no copy) so that the
    index axes i, j, k run along +L, +P, +S (the nearest patient axis for tilted grids).

    Block averaging then starts at the same physical corner whatever the storage order (axial,
    sagittal, feet-first, RAS NIfTI), so the network sees the same voxels. Returns the inputs
    unchanged when the axes do not map one-to-one onto patient axes.
    """
    d = geometry.matrix
    lps_axis = [int(np.argmax(np.abs(d[:, a]))) for a in range(3)]  # index axis a -> LPS axis
    if sorted(lps_axis) != [0, 1, 2]:
        return array, geometry
    sign = [float(np.sign(d[lps_axis[a], a])) for a in range(3)]
    perm = [lps_axis.index(b) for b in range(3)]  # LPS axis b <- old index axis perm[b]
    view = array
    for a in range(3):
        if sign[a] < 0:
            view = np.flip(view, axis=2 - a)
    view = np.transpose(view, axes=[2 - perm[2], 2 - perm[1], 2 - perm[0]])
    shape_ijk = array.shape[::-1]
    start = [shape_ijk[a] - 1 if sign[a] < 0 else 0 for a in range(3)]
    origin = geometry.index_to_lps(np.array(start, dtype=np.float64))
    cols = [d[:, perm[b]] * sign[perm[b]] for b in range(3)]
    direction = np.stack(cols, axis=1)
    geo = Geometry(
        origin=(float(origin[0]), float(origin[1]), float(origin[2])),
        spacing=tuple(float(geometry.spacing[perm[b]]) for b in range(3)),  # type: ignore[arg-type]
        direction=tuple(float(v) for v in direction.ravel()),
    )
    return view, geo


def to_canonical_grid(volume: Volume, spacing: float) -> tuple[NDArray[np.float32], Geometry]:
    """HU on the canonical grid at ``spacing`` mm (block-averaged first when much finer)."""
    factors = tuple(max(1, int(spacing / s)) for s in volume.geometry.spacing)
    if max(factors) > 1:
        arr, geo_lps = lps_ordered(volume.array, volume.geometry)
        factors = tuple(max(1, int(spacing / s)) for s in geo_lps.spacing)
        lps_volume = Volume(array=arr, geometry=geo_lps, modality=volume.modality)
        arr, src_geo = block_mean(lps_volume, factors)  # type: ignore[arg-type]
    else:
        arr, src_geo = volume.array, volume.geometry
    img = to_sitk(arr, src_geo)
    geo, shape = canonical_geometry(volume.geometry, volume.array.shape, spacing)
    return resample_image(img, geo, shape, default=AIR_HU, antialias=True), geo


def body_box(hu: NDArray[np.float32], margin: int = 2) -> tuple[slice, slice, slice]:
    """Bounding box of the largest connected region above -400 HU (the patient)."""
    mask = hu > BODY_THRESHOLD_HU
    lab, n = ndimage.label(mask)
    if n == 0:
        return (slice(0, hu.shape[0]), slice(0, hu.shape[1]), slice(0, hu.shape[2]))
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    keep = int(np.argmax(sizes))
    box = ndimage.find_objects((lab == keep).astype(np.uint8))[0]
    return tuple(  # type: ignore[return-value]
        slice(max(0, s.start - margin), min(n_, s.stop + margin))
        for s, n_ in zip(box, hu.shape, strict=True)
    )


def crop_to_body(hu: NDArray[np.float32], geo: Geometry) -> tuple[NDArray[np.float32], Geometry]:
    """The model-grid image cropped to :func:`body_box`, with the geometry of the crop."""
    box = body_box(hu)
    start = np.array([box[2].start, box[1].start, box[0].start], dtype=np.float64)
    origin = geo.index_to_lps(start)
    cropped = Geometry(origin=(float(origin[0]), float(origin[1]), float(origin[2])),
                       spacing=geo.spacing, direction=geo.direction)
    return np.ascontiguousarray(hu[box]), cropped
