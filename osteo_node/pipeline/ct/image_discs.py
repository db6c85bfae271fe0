"""Discs seen on the CT itself: a dark band between two bright endplates along the column.

The network's disc class is the first source of discs (:mod:`.disc_profile`); where it saw
none, the height prior cuts a run blind and the bodies next to the cut are not graded. Yet a
disc is usually plain on the image: every vertebral body ends in a cortical endplate, and
between two endplates lies the disc, darker than both (nucleus and annulus about 70-110 HU,
cortical endplates several hundred HU; a vacuum disc is darker still). This module finds those
bands in the straightened image column by column ((u, v), along z, so a tilted disc is
followed): a voxel is *disc-like* when the brightest voxels within ``ENDPLATE_REACH_MM`` above
it and below it are both at least ``DIP_HU`` brighter. Trabecular bone in the middle of a body
is dark too, but its endplates are half a body height away, out of reach.

The disc-like voxels are then grouped into discs exactly as the network's disc probability is
(:func:`.disc_profile.find_discs`: pieces on the mid-sagittal slab, a plane fitted through the
column, strength = share of the cross-section). These image discs are offered to the
height-prior checks as candidates where a run is too long for one body; they never split a run
of normal length, so a dark cleft or a vein inside a body is not taken for a disc.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from osteo_node.pipeline.ct.disc_profile import DiscPlane, find_discs

#: HU by which both endplates around a disc-like voxel exceed it. Cortical endplate vs disc
#: (about 70-110 HU) differs by several hundred HU at native resolution; 60 HU still holds
#: for osteoporotic endplates and for thick slices that blur the endplates into the disc.
DIP_HU = 60.0
ENDPLATE_REACH_MM = 6.0  # endplates lie within this above and below a disc's middle
SMOOTH_Z_MM = 0.75  # noise smoothing along the column
SMOOTH_UV_MM = 2.0  # ... and across it


def disc_like(image: NDArray[np.float32], step_mm: float) -> NDArray[np.float32]:
    """1.0 where a voxel of the straightened image ``[z, u, v]`` (HU) lies between two brighter
    endplates (see the module docstring), else 0.0."""
    p = ndimage.gaussian_filter(image.astype(np.float32),
                                (SMOOTH_Z_MM / step_mm, SMOOTH_UV_MM / step_mm,
                                 SMOOTH_UV_MM / step_mm), mode="nearest")
    k = max(1, round(ENDPLATE_REACH_MM / step_mm))
    n = p.shape[0]
    padded = np.pad(p, ((k, k), (0, 0), (0, 0)), mode="edge")
    up = padded[k + 1: k + 1 + n].copy()
    down = padded[k - 1: k - 1 + n].copy()
    for j in range(2, k + 1):
        np.maximum(up, padded[k + j: k + j + n], out=up)
        np.maximum(down, padded[k - j: k - j + n], out=down)
    return (np.minimum(up, down) - p >= DIP_HU).astype(np.float32)


def image_discs(image: NDArray[np.float32], in_column: NDArray[np.bool_],
                column_area: NDArray[np.float64], axis: tuple[float, float],
                step_mm: float) -> list[DiscPlane]:
    """Disc planes (caudal -> cranial) seen on the image inside the column's cross-section
    ``in_column``, with the strength of :func:`.disc_profile.find_discs`."""
    dips = disc_like(image, step_mm) * in_column
    return find_discs(dips, in_column, column_area, axis, step_mm)
