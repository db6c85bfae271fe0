"""Typed inputs shared by the pipeline stages: image geometry, volumes and label maps.

Conventions (used everywhere in the pipeline):
- Arrays are indexed ``[k, j, i]`` = ``[slice, row, column]`` (SimpleITK's ``GetArrayFromImage``
  order).
- ``Geometry`` maps voxel index ``(i, j, k)`` to DICOM patient coordinates (LPS, mm):
  ``lps = origin + direction @ (spacing * (i, j, k))``; ``direction`` columns are the unit
  vectors of the i (column), j (row) and k (slice) axes in LPS.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

Points = NDArray[np.float64] | tuple[float, float, float]


@dataclass(frozen=True)
class Geometry:
    """Voxel grid in DICOM patient coordinates (LPS, millimetres)."""

    origin: tuple[float, float, float]
    spacing: tuple[float, float, float]  # (i: column, j: row, k: slice) in mm
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)  # row-major 3x3

    def __post_init__(self) -> None:
        if len(self.origin) != 3 or len(self.spacing) != 3 or len(self.direction) != 9:
            raise ValueError("Geometry needs 3 origin, 3 spacing and 9 direction values")
        if min(self.spacing) <= 0:
            raise ValueError(f"spacing must be positive, got {self.spacing}")

    @property
    def matrix(self) -> NDArray[np.float64]:
        """3x3 direction matrix (columns = i, j, k axes in LPS)."""
        return np.asarray(self.direction, dtype=np.float64).reshape(3, 3)

    def index_to_lps(self, ijk: Points) -> NDArray[np.float64]:
        """Continuous voxel index (i, j, k) -> LPS mm. Accepts shape (3,) or (N, 3)."""
        a = np.asarray(ijk, dtype=np.float64)
        scaled = a * np.asarray(self.spacing)
        return np.asarray(self.origin) + scaled @ self.matrix.T

    def lps_to_index(self, lps: Points) -> NDArray[np.float64]:
        """LPS mm -> continuous voxel index (i, j, k). Accepts shape (3,) or (N, 3)."""
        a = np.asarray(lps, dtype=np.float64) - np.asarray(self.origin)
        return (a @ np.linalg.inv(self.matrix).T) / np.asarray(self.spacing)


@dataclass(frozen=True)
class SourceInstance:
    """One source DICOM instance that contributed a slice (for references in SR/SEG/KOS)."""

    sop_class_uid: str
    sop_instance_uid: str


@dataclass
class Volume:
    """A 3D image with its geometry and, when it came from DICOM, where it came from.

    ``array`` is float32 [k, j, i]; CT values are Hounsfield units after rescale.
    ``header`` is a pydicom Dataset of the first source instance (patient/study modules for the
    exporters); ``None`` for NIfTI input.
    """

    array: NDArray[np.float32]
    geometry: Geometry
    modality: str  # "CT" or "MR"
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    sources: list[SourceInstance] = field(default_factory=list)  # one per slice, in k order
    header: Any = None  # pydicom.Dataset | None
    description: str = ""

    def __post_init__(self) -> None:
        if self.array.ndim != 3:
            raise ValueError(f"Volume array must be 3D, got shape {self.array.shape}")


@dataclass
class LabelVolume:
    """Integer label map on the same grid as a Volume, with the meaning of each value.

    ``levels`` maps a level name ("T12", "L1", ...) to its label value in ``array``.
    ``confidence`` maps the level name to a 0..1 confidence of the level assignment.
    """

    array: NDArray[np.integer[Any]]
    geometry: Geometry
    levels: dict[str, int] = field(default_factory=dict)
    confidence: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def mask(self, level: str) -> NDArray[np.bool_]:
        return np.asarray(self.array == self.levels[level])
