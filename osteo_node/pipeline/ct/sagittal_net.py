"""Run the sagittal CT network on every sagittal plane of the straightened column.

The network (``ai_models/ct_sagittal``, a 2D MONAI UNet exported to ONNX) sees three planes
(``model.json`` ``planes_mm``, e.g. v - 3 mm, v, v + 3 mm) and labels plane v: background,
vertebral body, posterior elements, intervertebral disc, sacrum. Batch norm makes the answer
independent of the image size, so each plane is processed whole (no sliding window); the rows
and columns are edge-padded to a multiple of the network's divisor (a thin slab continues as
itself rather than ending in air).
"""

from __future__ import annotations

import math
import threading

import numpy as np
from numpy.typing import NDArray

from osteo_node.models import OnnxModel, default_ct_model_dir, load_model

PLANES_PER_RUN = 6


def column_probabilities(model: OnnxModel, image: NDArray[np.float32],
                         step_mm: float) -> NDArray[np.float32]:
    """Softmax probabilities ``[C, z, u, v]`` of a straightened column ``image [z, u, v]``."""
    m = model.manifest
    nz, nu, nv = image.shape
    offsets = [round(p / step_mm) for p in m.planes_mm] or [0]
    div = m.divisor
    rows, cols = max(div, math.ceil(nz / div) * div), math.ceil(nu / div) * div
    norm = m.normalisation
    x = np.clip(image, norm.hu_min, norm.hu_max) / np.float32(norm.scale)
    x = np.pad(x, [(0, rows - nz), (0, cols - nu), (0, 0)], mode="edge").astype(np.float32)
    n_cls = len(m.labels)
    out = np.empty((n_cls, nz, nu, nv), dtype=np.float32)
    for v0 in range(0, nv, PLANES_PER_RUN):
        planes = range(v0, min(nv, v0 + PLANES_PER_RUN))
        batch = np.stack([np.stack([x[:, :, min(nv - 1, max(0, v + o))] for o in offsets])
                          for v in planes])
        logits = model.run(batch)[:, :, :nz, :nu]
        logits -= logits.max(axis=1, keepdims=True)
        np.exp(logits, out=logits)
        logits /= logits.sum(axis=1, keepdims=True)
        out[:, :, :, planes.start:planes.stop] = logits.transpose(1, 2, 3, 0)
    return out


_MODEL: OnnxModel | None = None
_LOCK = threading.Lock()


def default_model() -> OnnxModel:
    """The shipped sagittal CT model, loaded (and checksum-verified) once per process."""
    global _MODEL  # noqa: PLW0603 - process-wide cache of an immutable session
    with _LOCK:
        if _MODEL is None:
            _MODEL = load_model(default_ct_model_dir())
        return _MODEL
