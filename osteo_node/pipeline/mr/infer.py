"""Vertebral-body probability for a canonical sagittal volume ``[LR, SI, AP]``.

Each sagittal slice is normalised (per-volume percentiles), resampled in-plane to the model's
pixel spacing, zero-padded to the network's size multiple, run through ONNX Runtime in small
batches, and the probability is resampled back to the slice's own grid. The slice direction is
never resampled: thick clinical slices are used as they are (the network was trained with
simulated 1-5 mm slabs).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from osteo_node.pipeline.mr.model import BodyModel
from osteo_node.pipeline.mr.preprocess import (
    normalise_intensity,
    pad_to_multiple,
    resample_stack,
    resize_stack_to,
)

BATCH_SLICES = 8


def body_probability(
    model: BodyModel,
    canon: NDArray[np.float32],
    spacing_si_ap: tuple[float, float],
    batch_slices: int = BATCH_SLICES,
) -> NDArray[np.float32]:
    """P(vertebral body) on the same ``[LR, SI, AP]`` grid as ``canon``."""
    norm = normalise_intensity(canon)
    shape_rc = (canon.shape[1], canon.shape[2])
    target = model.manifest.spacing_mm
    prob = np.empty(canon.shape, dtype=np.float32)
    for start in range(0, canon.shape[0], batch_slices):
        chunk = resample_stack(norm[start : start + batch_slices], spacing_si_ap, target)
        padded, (r, c) = pad_to_multiple(chunk, model.manifest.size_multiple)
        p = model.predict(padded)[:, :r, :c]
        if p.shape[1:] != shape_rc:
            p = resize_stack_to(p, shape_rc)
        prob[start : start + batch_slices] = p
    return prob
