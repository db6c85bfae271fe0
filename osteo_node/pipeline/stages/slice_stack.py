"""Slice order and LPS geometry of a DICOM slice stack, refusing inconsistent stacks.

Slices are ordered by their position along the slice normal (ImagePositionPatient projected on
the normal from ImageOrientationPatient); the slice spacing comes from those positions, never
only from SpacingBetweenSlices/SliceThickness. Duplicate positions, irregular gaps, sheared
(gantry-tilted) stacks and inconsistent slice geometry are refused with a :class:`VolumeError`
whose message says exactly what is wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset

from osteo_node.pipeline.stages.dicom_headers import sop_instance_of
from osteo_node.pipeline.types import Geometry


class VolumeError(ValueError):
    """The series cannot be turned into a trustworthy volume; the message says why."""


@dataclass(frozen=True)
class LoadTolerances:
    duplicate_position_tolerance_mm: float = 0.01
    max_spacing_irregularity: float = 0.1  # fraction of the median gap
    max_shear_deg: float = 1.0

    @classmethod
    def from_mapping(cls, data: dict[str, Any] | None) -> LoadTolerances:
        data = data or {}
        return cls(**{k: float(v) for k, v in data.items() if k in cls.__dataclass_fields__})


def _floats(ds: Dataset, keyword: str, n: int) -> NDArray[np.float64]:
    value = ds.get(keyword)
    if value is None or len(value) != n:
        raise VolumeError(f"{keyword} missing or malformed in slice {sop_instance_of(ds) or '?'}")
    return np.asarray([float(v) for v in value], dtype=np.float64)


@dataclass(frozen=True)
class StackGeometry:
    order: list[int]  # indices into the header list, in increasing position along the normal
    geometry: Geometry
    rows: int
    columns: int
    warnings: list[str]


@dataclass(frozen=True)
class _SliceLayout:
    """What every slice of one stack must share: orientation, pixel spacing and matrix size."""

    iop: NDArray[np.float64]
    pixel: NDArray[np.float64]  # (row spacing, column spacing)
    rows: int
    columns: int

    @property
    def row_dir(self) -> NDArray[np.float64]:
        return self.iop[:3]

    @property
    def col_dir(self) -> NDArray[np.float64]:
        return self.iop[3:]


def _slice_layout(first: Dataset) -> _SliceLayout:
    """The first slice's layout; refuses a non-orthonormal orientation."""
    iop = _floats(first, "ImageOrientationPatient", 6)
    row_dir, col_dir = iop[:3], iop[3:]
    normal = np.cross(row_dir, col_dir)
    if abs(np.linalg.norm(normal) - 1.0) > 1e-3 or abs(float(row_dir @ col_dir)) > 1e-3:
        raise VolumeError(f"ImageOrientationPatient {iop.tolist()} is not orthonormal")
    pixel = _floats(first, "PixelSpacing", 2)
    return _SliceLayout(iop, pixel, int(first.get("Rows", 0)), int(first.get("Columns", 0)))


def _positions(headers: Sequence[Dataset], layout: _SliceLayout) -> NDArray[np.float64]:
    """ImagePositionPatient of every slice; refuses slices that do not share ``layout``."""
    positions = np.empty((len(headers), 3))
    for n, ds in enumerate(headers):
        if not np.allclose(_floats(ds, "ImageOrientationPatient", 6), layout.iop, atol=1e-4):
            raise VolumeError("slices have different ImageOrientationPatient (mixed stacks)")
        if not np.allclose(_floats(ds, "PixelSpacing", 2), layout.pixel, atol=1e-5):
            raise VolumeError("slices have different PixelSpacing")
        if int(ds.get("Rows", 0)) != layout.rows or int(ds.get("Columns", 0)) != layout.columns:
            raise VolumeError("slices have different Rows/Columns")
        positions[n] = _floats(ds, "ImagePositionPatient", 3)
    return positions


def _check_gaps(
    headers: Sequence[Dataset], order: list[int], d_sorted: NDArray[np.float64],
    tol: LoadTolerances, warnings: list[str],
) -> None:
    """Refuse duplicate positions and irregular gaps; warn about small gap variations."""
    gaps = np.diff(d_sorted)
    dup = np.flatnonzero(gaps < tol.duplicate_position_tolerance_mm)
    if dup.size:
        first = order[int(dup[0])]
        raise VolumeError(
            f"duplicate slice positions: {dup.size} slice pair(s) share a position "
            f"(first at {d_sorted[dup[0]]:.2f} mm along the normal, instance "
            f"{headers[first].get('InstanceNumber', '?')}); the series mixes acquisitions "
            "or repeats slices"
        )
    median_gap = float(np.median(gaps))
    deviation = np.abs(gaps - median_gap) / median_gap
    if float(deviation.max()) > tol.max_spacing_irregularity:
        worst = int(np.argmax(deviation))
        raise VolumeError(
            f"irregular slice spacing: gap of {gaps[worst]:.2f} mm between slices "
            f"{worst} and {worst + 1} (median {median_gap:.2f} mm, "
            f"{int((deviation > tol.max_spacing_irregularity).sum())} irregular gap(s)); "
            "missing or extra slices"
        )
    if float(deviation.max()) > 1e-3:
        warnings.append(
            f"slice gaps vary by up to {100 * float(deviation.max()):.1f}% of "
            f"{median_gap:.3f} mm; mean spacing used"
        )


def _stack_spacing(
    first: Dataset, ordered: NDArray[np.float64], normal: NDArray[np.float64],
    tol: LoadTolerances, warnings: list[str],
) -> float:
    """Mean spacing along the stack from the ordered positions; refuses sheared stacks."""
    step = (ordered[-1] - ordered[0]) / (len(ordered) - 1)
    spacing_k = float(np.linalg.norm(step))
    k_dir = step / spacing_k
    shear = float(np.degrees(np.arccos(np.clip(abs(k_dir @ normal), -1.0, 1.0))))
    if shear > tol.max_shear_deg:
        raise VolumeError(
            f"sheared slice stack (gantry tilt about {shear:.1f} deg between slice normal "
            "and slice positions); resampling tilted stacks is not supported"
        )
    tag = first.get("SpacingBetweenSlices")
    if tag is not None and abs(abs(float(tag)) - spacing_k) > 0.05 * spacing_k:
        warnings.append(
            f"SpacingBetweenSlices {float(tag)} disagrees with positions ({spacing_k:.3f} mm)"
        )
    return spacing_k


def stack_geometry(headers: Sequence[Dataset], tol: LoadTolerances | None = None) -> StackGeometry:
    """Order slices and derive the LPS geometry from positions; refuse inconsistent stacks."""
    tol = tol or LoadTolerances()
    if not headers:
        raise VolumeError("no DICOM slices")
    warnings: list[str] = []
    layout = _slice_layout(headers[0])
    normal = np.cross(layout.row_dir, layout.col_dir)
    positions = _positions(headers, layout)
    dist = positions @ normal
    order = [int(i) for i in np.argsort(dist, kind="stable")]
    if len(order) == 1:
        spacing_k = float(headers[0].get("SliceThickness") or 1.0)
        warnings.append("single slice: slice spacing taken from SliceThickness")
    else:
        _check_gaps(headers, order, dist[order], tol, warnings)
        # within the shear tolerance the slice normal is kept: an orthonormal grid
        spacing_k = _stack_spacing(headers[0], positions[order], normal, tol, warnings)
    direction = np.column_stack([layout.row_dir, layout.col_dir, normal])
    geometry = Geometry(
        origin=tuple(float(v) for v in positions[order[0]]),  # type: ignore[arg-type]
        spacing=(float(layout.pixel[1]), float(layout.pixel[0]), spacing_k),
        direction=tuple(float(v) for v in direction.ravel()),
    )
    return StackGeometry(order, geometry, layout.rows, layout.columns, warnings)
