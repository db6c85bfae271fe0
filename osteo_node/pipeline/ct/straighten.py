"""A straightened view of the spinal column: every axial plane shifted so the canal is at (0, 0).

``S[z, u, v]`` samples the CT at ``(x_c(z) + v, y_c(z) + u, z)`` (LPS mm), where
``(x_c, y_c)`` is the canal centreline of :mod:`.column`. The column then stands upright in a
narrow box whatever the patient's position, lordosis, kyphosis or scoliosis, so a 2D network
sees every vertebra in the same place on sagittal planes (``S[:, :, v]``: rows = z, columns =
u), at a fixed resolution ``STEP_MM`` whatever the scanner's. Inclined parts of the column (the
lumbosacral junction, the neck) appear sheared rather than rotated; training data go through the
same transform. The mapping back is a per-plane translation, so any voxel of the input finds its
place in ``S`` exactly (:meth:`StraightFrame.index_of`).

Axes: z increases cranially (+S), u posteriorly (+P; the vertebral bodies lie at negative u),
v to the patient's left (+L).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from osteo_node.pipeline.ct.column import SpinalCanal
from osteo_node.pipeline.types import Geometry, Volume

STEP_MM = 1.5
U_ANTERIOR_MM = 84.0  # bodies lie 5-70 mm in front of the canal centre
U_POSTERIOR_MM = 48.0  # laminae and most of the spinous processes
V_HALF_MM = 33.0  # bodies are up to ~50 mm wide; transverse processes are not needed
Z_MARGIN_MM = 15.0  # beyond the ends of the canal (the sacral body lies in front of its end)
AIR_HU = -1024.0
CHUNK_ROWS = 64


@dataclass(frozen=True)
class StraightFrame:
    """The straightened grid: ``nz`` rows from ``z0`` (mm, LPS z) at ``step``; u from
    ``-U_ANTERIOR_MM``, v from ``-V_HALF_MM``, both at ``step``."""

    canal: SpinalCanal
    z0: float
    nz: int
    step: float = STEP_MM
    # the first / last row is the edge of the scan (not the end of the canal + margin): a
    # vertebra reaching it is cut by the field of view
    scan_edge_below: bool = False
    scan_edge_above: bool = False
    scan_z: tuple[float, float] = (-np.inf, np.inf)  # the scan's extent (LPS z, mm)

    @property
    def nu(self) -> int:
        return round((U_ANTERIOR_MM + U_POSTERIOR_MM) / self.step) + 1

    @property
    def nv(self) -> int:
        return 2 * round(V_HALF_MM / self.step) + 1

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.nz, self.nu, self.nv)

    @property
    def u0(self) -> float:
        return -U_ANTERIOR_MM

    @property
    def v0(self) -> float:
        return -(self.nv // 2) * self.step

    def z_of(self, zi: NDArray[np.float64] | float) -> NDArray[np.float64]:
        return np.asarray(self.z0 + np.asarray(zi, dtype=np.float64) * self.step)

    def u_of(self, ui: NDArray[np.float64] | float) -> NDArray[np.float64]:
        return np.asarray(self.u0 + np.asarray(ui, dtype=np.float64) * self.step)

    def lps_of(self, zi: NDArray[np.float64], ui: NDArray[np.float64],
               vi: NDArray[np.float64]) -> NDArray[np.float64]:
        """LPS mm of (broadcast) straightened indices; shape (..., 3)."""
        z = self.z_of(zi)
        xc, yc = self.canal.at(z)
        x = xc + self.v0 + np.asarray(vi, dtype=np.float64) * self.step
        y = yc + self.u_of(ui)
        return np.stack(np.broadcast_arrays(x, y, z), axis=-1)

    def index_of(self, lps: NDArray[np.float64]) -> NDArray[np.float64]:
        """Continuous (zi, ui, vi) of LPS points ``(..., 3)``."""
        x, y, z = lps[..., 0], lps[..., 1], lps[..., 2]
        xc, yc = self.canal.at(z)
        return np.stack([(z - self.z0) / self.step, (y - yc - self.u0) / self.step,
                         (x - xc - self.v0) / self.step], axis=-1)


def frame_for(canal: SpinalCanal, volume: Volume, step: float = STEP_MM) -> StraightFrame:
    """The frame along ``canal``, rows covering the canal +- Z_MARGIN_MM within the scan."""
    g, shape = volume.geometry, volume.array.shape
    corners = np.array([[i, j, k] for i in (0, shape[2] - 1) for j in (0, shape[1] - 1)
                        for k in (0, shape[0] - 1)], dtype=np.float64)
    z = g.index_to_lps(corners)[:, 2]
    lo = max(float(z.min()), float(canal.z_mm[0]) - Z_MARGIN_MM)
    hi = min(float(z.max()), float(canal.z_mm[-1]) + Z_MARGIN_MM)
    nz = max(1, int(np.floor((hi - lo) / step)) + 1)
    return StraightFrame(canal=canal, z0=lo, nz=nz, step=step,
                         scan_edge_below=lo <= float(z.min()) + step,
                         scan_edge_above=lo + (nz - 1) * step >= float(z.max()) - step,
                         scan_z=(float(z.min()), float(z.max())))


def sample(volume: Volume, frame: StraightFrame, order: int = 1) -> NDArray[np.float32]:
    """The CT resampled on the straightened grid ``[z, u, v]`` (AIR_HU outside the scan).

    Inputs much finer than the frame are averaged over 2 x 2 in-plane sub-samples (less
    aliasing of noise)."""
    g = volume.geometry
    out = np.empty(frame.shape, dtype=np.float32)
    fine = min(g.spacing[0], g.spacing[1]) < 0.75 * frame.step
    subs = [(-0.25, -0.25), (-0.25, 0.25), (0.25, -0.25), (0.25, 0.25)] if fine else [(0.0, 0.0)]
    ui, vi = np.meshgrid(np.arange(frame.nu, dtype=np.float64),
                         np.arange(frame.nv, dtype=np.float64), indexing="ij")
    for z0 in range(0, frame.nz, CHUNK_ROWS):
        z1 = min(frame.nz, z0 + CHUNK_ROWS)
        zi = np.arange(z0, z1, dtype=np.float64)[:, None, None]
        acc = np.zeros((z1 - z0, frame.nu, frame.nv), dtype=np.float32)
        for du, dv in subs:
            lps = frame.lps_of(zi, ui[None] + du, vi[None] + dv)
            ijk = g.lps_to_index(lps.reshape(-1, 3))
            vals = ndimage.map_coordinates(volume.array, [ijk[:, 2], ijk[:, 1], ijk[:, 0]],
                                           order=order, mode="constant", cval=AIR_HU,
                                           prefilter=False)
            acc += vals.reshape(acc.shape).astype(np.float32)
        out[z0:z1] = acc / np.float32(len(subs))
    return out


def sample_labels(labels: NDArray[np.integer], geometry: Geometry,
                  frame: StraightFrame) -> NDArray[np.integer]:
    """A label map (on ``geometry``) resampled nearest-neighbour on the straightened grid."""
    zi, ui, vi = np.meshgrid(np.arange(frame.nz, dtype=np.float64),
                             np.arange(frame.nu, dtype=np.float64),
                             np.arange(frame.nv, dtype=np.float64), indexing="ij")
    ijk = geometry.lps_to_index(frame.lps_of(zi, ui, vi).reshape(-1, 3))
    vals = ndimage.map_coordinates(labels, [ijk[:, 2], ijk[:, 1], ijk[:, 0]], order=0,
                                   mode="constant", cval=0, prefilter=False)
    return vals.reshape(frame.shape).astype(labels.dtype)


def _tube_box(frame: StraightFrame, geometry: Geometry, shape: tuple[int, ...]
              ) -> tuple[slice, slice, slice] | None:
    """Index box of the input grid that holds the straightened grid."""
    zs = np.linspace(0, frame.nz - 1, 17)
    pts = np.array([[z, u, v] for z in zs for u in (0, frame.nu - 1) for v in (0, frame.nv - 1)],
                   dtype=np.float64)
    idx = geometry.lps_to_index(frame.lps_of(pts[:, 0], pts[:, 1], pts[:, 2]))
    lo = np.floor(idx.min(axis=0)).astype(int) - 1
    hi = np.ceil(idx.max(axis=0)).astype(int) + 2
    nk, nj, ni = shape
    i0, j0, k0 = max(0, lo[0]), max(0, lo[1]), max(0, lo[2])
    i1, j1, k1 = min(ni, hi[0]), min(nj, hi[1]), min(nk, hi[2])
    if i0 >= i1 or j0 >= j1 or k0 >= k1:
        return None
    return slice(int(k0), int(k1)), slice(int(j0), int(j1)), slice(int(i0), int(i1))


def unstraighten_chunks(arrays: list[tuple[NDArray[Any], int]], frame: StraightFrame,
                        geometry: Geometry, shape: tuple[int, ...]
                        ) -> Iterator[tuple[tuple[slice, slice, slice], list[NDArray[Any]]]]:
    """Arrays of the straightened grid (each with its interpolation order: 1 linear, 0
    nearest) sampled on an input grid, a slab of slices at a time (memory stays small for
    long series): yields the slab's index box and the sampled arrays, 0 outside the tube."""
    box = _tube_box(frame, geometry, shape)
    if box is None:
        return
    ks, js, is_ = box
    jj, ii = np.meshgrid(np.arange(js.start, js.stop, dtype=np.float64),
                         np.arange(is_.start, is_.stop, dtype=np.float64), indexing="ij")
    for k0 in range(ks.start, ks.stop, CHUNK_ROWS):
        k1 = min(ks.stop, k0 + CHUNK_ROWS)
        kk = np.arange(k0, k1, dtype=np.float64)[:, None, None]
        ijk = np.stack(np.broadcast_arrays(ii[None], jj[None], kk), axis=-1).reshape(-1, 3)
        s = frame.index_of(geometry.index_to_lps(ijk)).T
        cshape = (k1 - k0, js.stop - js.start, is_.stop - is_.start)
        yield (slice(k0, k1), js, is_), [
            ndimage.map_coordinates(a, s, order=order, mode="constant", cval=0,
                                    prefilter=False).reshape(cshape) for a, order in arrays]


def unstraighten(arrays: list[tuple[NDArray[Any], int]], frame: StraightFrame,
                 geometry: Geometry, shape: tuple[int, ...]) -> list[NDArray[Any]]:
    """:func:`unstraighten_chunks` assembled into whole arrays of the input grid's shape."""
    outs = [np.zeros(shape, dtype=a.dtype) for a, _ in arrays]
    for box, parts in unstraighten_chunks(arrays, frame, geometry, shape):
        for out, part in zip(outs, parts, strict=True):
            out[box] = part
    return outs
