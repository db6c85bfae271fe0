"""Overlap metrics shared by the CT and MR evaluations and the model tests."""

from __future__ import annotations

from typing import Any, overload

import numpy as np
from numpy.typing import NDArray


@overload
def dice(a: NDArray[Any], b: NDArray[Any]) -> float | None: ...
@overload
def dice(a: NDArray[Any], b: NDArray[Any], empty: float) -> float: ...


def dice(a: NDArray[Any], b: NDArray[Any], empty: float | None = None) -> float | None:
    """Dice coefficient of two masks (non-zero = inside); ``empty`` when both are empty."""
    sa, sb = int(np.count_nonzero(a)), int(np.count_nonzero(b))
    if sa + sb == 0:
        return empty
    return 2.0 * int(np.count_nonzero(np.logical_and(a, b))) / (sa + sb)
