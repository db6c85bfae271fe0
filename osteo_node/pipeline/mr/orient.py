"""Canonical sagittal layout for the MR pipeline: array ``[LR, SI, AP]``.

Axis 0 runs right -> left (sagittal slice index), axis 1 head -> feet, axis 2 anterior ->
posterior, which is the layout the 2D network was trained on (each ``canon[s]`` is one sagittal
slice, rows head to feet, columns anterior to posterior). The view is a pure axis permutation
with flips (no resampling), so it maps label maps back to the source grid exactly.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from osteo_node.pipeline.types import Geometry

# Canonical axis directions in LPS: left, inferior (feet), posterior.
TARGETS = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])


@dataclass(frozen=True)
class CanonicalView:
    perm: tuple[int, int, int]  # canonical axis n is source array axis perm[n]
    flip: tuple[bool, bool, bool]  # canonical axis n runs against the source axis
    spacing: tuple[float, float, float]  # mm along canonical axes (LR, SI, AP)
    obliquity_deg: tuple[float, float, float]  # angle of each canonical axis to its target

    def to_canonical(self, a: NDArray[Any]) -> NDArray[Any]:
        out = np.transpose(a, self.perm)
        for n, f in enumerate(self.flip):
            if f:
                out = np.flip(out, axis=n)
        return out

    def from_canonical(self, c: NDArray[Any]) -> NDArray[Any]:
        out = c
        for n, f in enumerate(self.flip):
            if f:
                out = np.flip(out, axis=n)
        return np.ascontiguousarray(np.transpose(out, np.argsort(self.perm)))

    @property
    def sagittal_obliquity_deg(self) -> float:
        """Angle between the slice normal and the patient left-right axis."""
        return self.obliquity_deg[0]


def array_axis_directions(geometry: Geometry) -> NDArray[np.float64]:
    """Unit LPS direction of array axes 0, 1, 2 (= k, j, i)."""
    m = geometry.matrix  # columns i, j, k
    return np.stack([m[:, 2], m[:, 1], m[:, 0]])


def canonical_view(geometry: Geometry) -> CanonicalView:
    """Best axis permutation/flip mapping the [k, j, i] array to [LR, SI, AP]."""
    dirs = array_axis_directions(geometry)
    dots = TARGETS @ dirs.T  # [canonical, source]
    best = max(
        itertools.permutations(range(3)), key=lambda p: sum(abs(dots[n, p[n]]) for n in range(3))
    )
    perm = (int(best[0]), int(best[1]), int(best[2]))
    flip = tuple(bool(dots[n, perm[n]] < 0) for n in range(3))
    src_spacing = (geometry.spacing[2], geometry.spacing[1], geometry.spacing[0])  # k, j, i
    spacing = tuple(float(src_spacing[perm[n]]) for n in range(3))
    angles = tuple(
        float(np.degrees(np.arccos(np.clip(abs(dots[n, perm[n]]), 0.0, 1.0)))) for n in range(3)
    )
    return CanonicalView(perm, flip, spacing, angles)  # type: ignore[arg-type]
