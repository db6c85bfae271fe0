"""Intensity normalisation and in-plane resampling for the MR vertebral-body model.

Pure numpy/scipy: the training script imports these same functions, so training and inference
see identical inputs. MR intensities have no physical unit and differ between scanners and
sequences, so each volume is scaled by its own robust percentiles.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

PERCENTILES: tuple[float, float] = (1.0, 99.0)
CLIP: tuple[float, float] = (0.0, 1.5)
# Network input sides must be multiples of this (4 stride-2 levels in the UNet).
SIZE_MULTIPLE = 16


def normalise_intensity(array: NDArray[np.floating] | NDArray[np.integer]) -> NDArray[np.float32]:
    """Per-volume percentile normalisation: p1 -> 0, p99 -> 1, clipped to [0, 1.5].

    Percentiles are taken over all voxels of the volume (a subsample for big ones). A constant
    volume maps to zeros instead of dividing by zero.
    """
    a = np.asarray(array, dtype=np.float32)
    flat = a.ravel()
    if flat.size > 2_000_000:
        flat = flat[:: flat.size // 2_000_000 + 1]
    lo, hi = np.percentile(flat, PERCENTILES)
    scale = float(hi - lo)
    if scale <= 1e-6:
        return np.zeros_like(a, dtype=np.float32)
    out = (a - np.float32(lo)) / np.float32(scale)
    return np.clip(out, CLIP[0], CLIP[1]).astype(np.float32)


def resample_plane(
    plane: NDArray[np.float32], spacing_rc: tuple[float, float], target: float, order: int = 1
) -> NDArray[np.float32]:
    """Resample one 2D slice (rows, cols) with pixel spacing ``spacing_rc`` to ``target`` mm."""
    zoom = (spacing_rc[0] / target, spacing_rc[1] / target)
    if abs(zoom[0] - 1.0) < 1e-6 and abs(zoom[1] - 1.0) < 1e-6:
        return plane.astype(np.float32, copy=False)
    return ndimage.zoom(plane, zoom, order=order, mode="nearest", grid_mode=True).astype(np.float32)


def resample_stack(
    stack: NDArray[np.float32],
    spacing_rc: tuple[float, float],
    target: float,
    order: int = 1,
) -> NDArray[np.float32]:
    """Resample a stack of 2D slices ``[n, rows, cols]`` in-plane only."""
    zoom = (1.0, spacing_rc[0] / target, spacing_rc[1] / target)
    if abs(zoom[1] - 1.0) < 1e-6 and abs(zoom[2] - 1.0) < 1e-6:
        return stack.astype(np.float32, copy=False)
    return ndimage.zoom(stack, zoom, order=order, mode="nearest", grid_mode=True).astype(np.float32)


def resize_stack_to(
    stack: NDArray[np.float32], shape_rc: tuple[int, int], order: int = 1
) -> NDArray[np.float32]:
    """Resize a stack ``[n, r, c]`` in-plane to exactly ``shape_rc`` (back to the source grid)."""
    zoom = (1.0, shape_rc[0] / stack.shape[1], shape_rc[1] / stack.shape[2])
    out = ndimage.zoom(stack, zoom, order=order, mode="nearest", grid_mode=True)
    # zoom may be off by one pixel from rounding; crop/pad to the exact shape.
    out = out[:, : shape_rc[0], : shape_rc[1]]
    pad = ((0, 0), (0, shape_rc[0] - out.shape[1]), (0, shape_rc[1] - out.shape[2]))
    if any(p[1] for p in pad):
        out = np.pad(out, pad, mode="edge")
    return out.astype(np.float32)


def pad_to_multiple(
    stack: NDArray[np.float32], multiple: int = SIZE_MULTIPLE
) -> tuple[NDArray[np.float32], tuple[int, int]]:
    """Zero-pad ``[n, r, c]`` at the bottom/right so r and c are multiples; returns (padded, rc)."""
    r, c = stack.shape[1], stack.shape[2]
    pr = (-r) % multiple
    pc = (-c) % multiple
    if pr == 0 and pc == 0:
        return stack, (r, c)
    return np.pad(stack, ((0, 0), (0, pr), (0, pc))), (r, c)
