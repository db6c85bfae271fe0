"""Outlines of a voxel region, for drawing it where it was measured (SR regions, the SC).

:func:`pixel_outline` traces the outer boundary of a 2D pixel set along the pixel edges, so the
polygon encloses exactly those pixels' centres (filled even-odd, holes included); vertices are
pixel corners ((c - 0.5, r - 0.5) in centre-based index coordinates). :func:`roi_outlines`
gives the trabecular ROI's outline on its largest axial section and the outline of its
projection on the sagittal plane, both in LPS mm.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from osteo_node.pipeline.results import Point3, RoiOutline
from osteo_node.pipeline.types import Geometry


def _largest(mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    lab, n = ndimage.label(mask)  # 4-connected in 2D
    if n <= 1:
        return mask
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return np.asarray(lab == int(np.argmax(sizes)))


def _no_pinches(region: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """``region`` with every 2x2 block of two diagonal pixels (two parts touching at a corner
    only) closed by one pixel, so that each boundary corner has one way on."""
    out = region.copy()
    while True:
        a, b, c, d = out[:-1, :-1], out[:-1, 1:], out[1:, :-1], out[1:, 1:]
        diag = a & d & ~b & ~c
        anti = b & c & ~a & ~d
        if not (diag.any() or anti.any()):
            return out
        rr, cc = np.nonzero(diag)
        out[rr, cc + 1] = True
        rr, cc = np.nonzero(anti)
        out[rr, cc] = True


def pixel_outline(mask: NDArray[Any]) -> list[tuple[int, int]]:
    """Corners (c, r) of the outer boundary of the largest 4-connected region of a [r, c] mask,
    clockwise on the image, collinear corners dropped; [] for an empty mask. Holes are filled
    and parts touching at a corner only are joined by a pixel first."""
    region = np.asarray(ndimage.binary_fill_holes(_largest(np.asarray(mask, dtype=bool))))
    if not region.any():
        return []
    padded = _no_pinches(np.pad(region, 1))
    # directed boundary edges between corner points (c, r) of the padded grid, region on the
    # right of the direction of travel
    edges: dict[tuple[int, int], tuple[tuple[int, int], int]] = {}
    rs, cs = np.nonzero(padded)
    for r, c in zip(rs.tolist(), cs.tolist(), strict=True):
        if not padded[r - 1, c]:
            edges[(c, r)] = ((c + 1, r), 0)
        if not padded[r, c + 1]:
            edges[(c + 1, r)] = ((c + 1, r + 1), 1)
        if not padded[r + 1, c]:
            edges[(c + 1, r + 1)] = ((c, r + 1), 2)
        if not padded[r, c - 1]:
            edges[(c, r + 1)] = ((c, r), 3)
    start = min(edges, key=lambda p: (p[1], p[0]))  # top-left corner: on the outer boundary
    out: list[tuple[int, int]] = []
    point, heading = start, -1
    while True:
        nxt, direction = edges[point]
        if direction != heading:
            out.append(point)
        point, heading = nxt, direction
        if point == start:
            break
    return [(c - 1, r - 1) for c, r in out]  # un-pad


def fill_outline(corners: list[tuple[float, float]], shape: tuple[int, int]) -> NDArray[np.bool_]:
    """Pixels [r, c] whose centres (c + 0.5, r + 0.5 in corner coordinates) lie inside the
    polygon (even-odd), the inverse of :func:`pixel_outline` for a hole-free region."""
    rows, cols = shape
    out = np.zeros(shape, dtype=bool)
    if len(corners) < 3:
        return out
    pts = np.asarray(corners, dtype=np.float64)
    x0, y0 = pts[:, 0], pts[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    for r in range(rows):
        y = r + 0.5
        crosses = (y0 <= y) != (y1 <= y)
        if not crosses.any():
            continue
        xs = np.sort(x0[crosses] + (y - y0[crosses]) * (x1[crosses] - x0[crosses])
                     / (y1[crosses] - y0[crosses]))
        centres = np.arange(cols) + 0.5
        inside = (np.searchsorted(xs, centres) % 2) == 1
        out[r] = inside
    return out


def _lr_axis(geometry: Geometry) -> int:
    """Array axis ([k, j, i] -> 0, 1, 2) closest to the patient's left-right."""
    cols = geometry.matrix  # columns: i, j, k directions in LPS
    return 2 - int(np.argmax(np.abs(cols[0, :])))


def _corner_lps(corners: list[tuple[int, int]], plane: tuple[int, int], fixed: tuple[int, float],
                geometry: Geometry, offset: NDArray[np.int64]) -> tuple[Point3, ...]:
    """LPS of 2D corners (c, r) of the plane spanned by array axes ``plane`` = (row axis,
    column axis); ``fixed`` = (axis, centre-based index) of the remaining axis."""
    kji = np.zeros((len(corners), 3), dtype=np.float64)
    row_axis, col_axis = plane
    for n, (c, r) in enumerate(corners):
        kji[n, row_axis] = r - 0.5
        kji[n, col_axis] = c - 0.5
    kji[:, fixed[0]] = fixed[1]
    kji += offset
    lps = geometry.index_to_lps(kji[:, ::-1])
    return tuple((round(float(p[0]), 3), round(float(p[1]), 3), round(float(p[2]), 3))
                 for p in lps)


def roi_outlines(roi: NDArray[np.bool_], offset: NDArray[np.int64], geometry: Geometry
                 ) -> tuple[RoiOutline | None, RoiOutline | None]:
    """(axial, sagittal) outlines of an ROI crop ([k, j, i] at ``offset`` in ``geometry``): the
    ROI on its largest slice of the array's slice axis (k), and its projection along the
    left-right axis drawn through the ROI's left-right centre."""
    if not roi.any():
        return None, None
    areas = roi.sum(axis=(1, 2))
    k = int(np.argmax(areas))
    axial = pixel_outline(roi[k])
    axial_outline = RoiOutline(_corner_lps(axial, (1, 2), (0, float(k)), geometry, offset)) \
        if axial else None
    lr = _lr_axis(geometry)
    if lr == 0:  # a sagittal acquisition: its slices are the sagittal plane already
        return axial_outline, axial_outline
    projection = np.asarray(roi.any(axis=lr))  # [k, other]
    other = 1 if lr == 2 else 2
    centre = float(np.nonzero(roi)[lr].mean())
    sag = pixel_outline(projection)
    sag_outline = RoiOutline(_corner_lps(sag, (0, other), (lr, centre), geometry, offset)) \
        if sag else None
    return axial_outline, sag_outline
