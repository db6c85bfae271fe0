"""Segment stage: run the CT vertebra network (ONNX Runtime, numpy; no torch at run time).

Steps: bring the volume onto the model's canonical grid (axis-aligned LPS, isotropic
``model.json`` spacing; fine inputs are first bin-averaged, which is cheap and anti-aliased),
crop to the patient's body, normalise HU, sliding-window inference with Gaussian blending,
softmax. The per-class probabilities on the coarse grid are the result
(:class:`ModelGridSegmentation`); ``osteo_node.pipeline.ct.levels`` separates and names the
vertebrae and maps them back onto the input grid.

Entry points:
- :func:`segment_for_analysis` ``(volume) -> osteo_node.pipeline.ct.analyser.Segmentation``:
  what the CT analyser calls (loads the default model once per process).
- :func:`run_model` ``(volume, model) -> ModelGridSegmentation``.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from osteo_node.models import OnnxModel, default_ct_model_dir, load_model
from osteo_node.pipeline.ct.seg_grid import canonical_geometry, resample_image, to_sitk
from osteo_node.pipeline.types import Geometry, Volume

if TYPE_CHECKING:
    from osteo_node.pipeline.ct.analyser import Segmentation

AIR_HU = -1024.0
BODY_THRESHOLD_HU = -400.0  # voxels above this belong to the patient (or the table)
WINDOW_OVERLAP = 0.25


@dataclass
class ModelGridSegmentation:
    """Network output on the (cropped) canonical grid.

    ``probs`` float32 ``[C, k, j, i]`` softmax probabilities; ``hu`` the HU image on the same grid
    (the labelling looks for ribs in it); ``labels`` the channel names from model.json.
    """

    probs: NDArray[np.float32]
    hu: NDArray[np.float32]
    geometry: Geometry
    labels: dict[int, str]
    timings_s: dict[str, float] = field(default_factory=dict)

    @property
    def classes(self) -> NDArray[np.uint8]:
        return np.asarray(np.argmax(self.probs, axis=0), dtype=np.uint8)

    def channel(self, name: str) -> int:
        for value, label in self.labels.items():
            if label == name:
                return value
        raise KeyError(name)


def block_mean(volume: Volume, factors: tuple[int, int, int]) -> tuple[
    NDArray[np.float32], Geometry
]:
    """Average non-overlapping blocks of ``factors`` (i, j, k) voxels, slab by slab.

    Like SimpleITK's BinShrink (remainder voxels dropped) but without copying the whole input:
    peak memory stays near the input array itself. Returns the array and its geometry.
    """
    fi, fj, fk = factors
    nk, nj, ni = (d // f for d, f in zip(volume.array.shape, (fk, fj, fi), strict=True))
    out = np.empty((nk, nj, ni), dtype=np.float32)
    step = max(1, 32 // fk)
    for k0 in range(0, nk, step):
        k1 = min(nk, k0 + step)
        slab = volume.array[k0 * fk : k1 * fk, : nj * fj, : ni * fi]
        for axis, f in ((0, fk), (1, fj), (2, fi)):
            if f > 1:  # strided sums are ~3x faster than reshape(...).mean
                parts = [slab[(slice(None),) * axis + (slice(o, None, f),)] for o in range(f)]
                acc = parts[0].astype(np.float32, copy=True)
                for part in parts[1:]:
                    acc += part
                slab = acc
        out[k0:k1] = slab * np.float32(1.0 / (fi * fj * fk))
    g = volume.geometry
    origin = g.index_to_lps(np.array([(fi - 1) / 2, (fj - 1) / 2, (fk - 1) / 2]))
    geo = Geometry(
        origin=(float(origin[0]), float(origin[1]), float(origin[2])),
        spacing=(g.spacing[0] * fi, g.spacing[1] * fj, g.spacing[2] * fk),
        direction=g.direction,
    )
    return out, geo


def lps_ordered(array: NDArray[np.float32], geometry: Geometry) -> tuple[
    NDArray[np.float32], Geometry
]:
    """The same image with its array axes flipped/permuted (numpy views, no copy) so that the
    index axes i, j, k run along +L, +P, +S (the nearest patient axis for tilted grids).

    Block averaging then starts at the same physical corner whatever the storage order (axial,
    sagittal, feet-first, RAS NIfTI), so the network sees the same voxels. Returns the inputs
    unchanged when the axes do not map one-to-one onto patient axes.
    """
    d = geometry.matrix
    lps_axis = [int(np.argmax(np.abs(d[:, a]))) for a in range(3)]  # index axis a -> LPS axis
    if sorted(lps_axis) != [0, 1, 2]:
        return array, geometry
    sign = [float(np.sign(d[lps_axis[a], a])) for a in range(3)]
    perm = [lps_axis.index(b) for b in range(3)]  # LPS axis b <- old index axis perm[b]
    view = array
    for a in range(3):
        if sign[a] < 0:
            view = np.flip(view, axis=2 - a)
    view = np.transpose(view, axes=[2 - perm[2], 2 - perm[1], 2 - perm[0]])
    shape_ijk = array.shape[::-1]
    start = [shape_ijk[a] - 1 if sign[a] < 0 else 0 for a in range(3)]
    origin = geometry.index_to_lps(np.array(start, dtype=np.float64))
    cols = [d[:, perm[b]] * sign[perm[b]] for b in range(3)]
    direction = np.stack(cols, axis=1)
    geo = Geometry(
        origin=(float(origin[0]), float(origin[1]), float(origin[2])),
        spacing=tuple(float(geometry.spacing[perm[b]]) for b in range(3)),  # type: ignore[arg-type]
        direction=tuple(float(v) for v in direction.ravel()),
    )
    return view, geo


def to_model_grid(volume: Volume, spacing: float) -> tuple[NDArray[np.float32], Geometry]:
    """HU on the canonical grid at ``spacing`` mm (block-averaged first when much finer)."""
    factors = tuple(max(1, int(spacing / s)) for s in volume.geometry.spacing)
    if max(factors) > 1:
        arr, geo_lps = lps_ordered(volume.array, volume.geometry)
        factors = tuple(max(1, int(spacing / s)) for s in geo_lps.spacing)
        lps_volume = Volume(array=arr, geometry=geo_lps, modality=volume.modality)
        arr, src_geo = block_mean(lps_volume, factors)  # type: ignore[arg-type]
    else:
        arr, src_geo = volume.array, volume.geometry
    img = to_sitk(arr, src_geo)
    geo, shape = canonical_geometry(volume.geometry, volume.array.shape, spacing)
    return resample_image(img, geo, shape, default=AIR_HU, antialias=True), geo


def body_box(hu: NDArray[np.float32], margin: int = 2) -> tuple[slice, slice, slice]:
    """Bounding box of the largest connected region above -400 HU (the patient)."""
    mask = hu > BODY_THRESHOLD_HU
    lab, n = ndimage.label(mask)
    if n == 0:
        return (slice(0, hu.shape[0]), slice(0, hu.shape[1]), slice(0, hu.shape[2]))
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    keep = int(np.argmax(sizes))
    box = ndimage.find_objects((lab == keep).astype(np.uint8))[0]
    return tuple(  # type: ignore[return-value]
        slice(max(0, s.start - margin), min(n_, s.stop + margin))
        for s, n_ in zip(box, hu.shape, strict=True)
    )


def crop_to_body(hu: NDArray[np.float32], geo: Geometry) -> tuple[NDArray[np.float32], Geometry]:
    """The model-grid image cropped to :func:`body_box`, with the geometry of the crop."""
    box = body_box(hu)
    start = np.array([box[2].start, box[1].start, box[0].start], dtype=np.float64)
    origin = geo.index_to_lps(start)
    cropped = Geometry(origin=(float(origin[0]), float(origin[1]), float(origin[2])),
                       spacing=geo.spacing, direction=geo.direction)
    return np.ascontiguousarray(hu[box]), cropped


def _gaussian_weight(patch: tuple[int, int, int]) -> NDArray[np.float32]:
    axes = []
    for p in patch:
        x = np.arange(p, dtype=np.float32) - (p - 1) / 2.0
        sigma = p / 8.0
        axes.append(np.exp(-(x * x) / (2 * sigma * sigma)))
    w = axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]
    w = w / w.max()
    return np.maximum(w, 1e-3).astype(np.float32)


def _starts(size: int, patch: int, overlap: float) -> list[int]:
    if size <= patch:
        return [0]
    step = max(1, int(patch * (1.0 - overlap)))
    n = math.ceil((size - patch) / step) + 1
    return sorted({min(i * step, size - patch) for i in range(n)})


def sliding_window(
    model: OnnxModel, x: NDArray[np.float32], patch: tuple[int, int, int], overlap: float
) -> NDArray[np.float32]:
    """Softmax probabilities ``[C, k, j, i]`` for a normalised image ``x`` ``[k, j, i]``.

    The image is edge-padded to at least one patch and to a multiple of the network's divisor;
    windows are blended with a Gaussian weight.
    """
    div = model.manifest.divisor
    shape = x.shape
    win = tuple(min(p, math.ceil(s / div) * div) for p, s in zip(patch, shape, strict=True))
    padded_shape = tuple(max(w, math.ceil(s / div) * div) for w, s in zip(win, shape, strict=True))
    # edge padding: a thin slab continues as itself rather than ending in air
    xp = np.pad(x, [(0, p - s) for p, s in zip(padded_shape, shape, strict=True)], mode="edge")
    n_cls = len(model.manifest.labels)
    acc = np.zeros((n_cls, *padded_shape), dtype=np.float32)
    norm = np.zeros(padded_shape, dtype=np.float32)
    weight = _gaussian_weight((win[0], win[1], win[2]))
    for k0 in _starts(padded_shape[0], win[0], overlap):
        for j0 in _starts(padded_shape[1], win[1], overlap):
            for i0 in _starts(padded_shape[2], win[2], overlap):
                sl = (slice(k0, k0 + win[0]), slice(j0, j0 + win[1]), slice(i0, i0 + win[2]))
                logits = model.run(xp[sl][None, None])[0]
                logits -= logits.max(axis=0, keepdims=True)
                np.exp(logits, out=logits)
                logits /= logits.sum(axis=0, keepdims=True)
                acc[(slice(None), *sl)] += logits * weight
                norm[sl] += weight
    acc /= norm[None]
    return acc[:, : shape[0], : shape[1], : shape[2]]


def run_model(volume: Volume, model: OnnxModel) -> ModelGridSegmentation:
    """Resample, crop, normalise and run the network; probabilities on the canonical grid."""
    m = model.manifest
    t0 = time.perf_counter()
    hu, geo = crop_to_body(*to_model_grid(volume, m.spacing_mm))
    t1 = time.perf_counter()
    x = np.clip(hu, m.normalisation.hu_min, m.normalisation.hu_max) / m.normalisation.scale
    probs = sliding_window(model, x.astype(np.float32), m.patch_size, WINDOW_OVERLAP)
    t2 = time.perf_counter()
    return ModelGridSegmentation(
        probs=probs, hu=hu, geometry=geo, labels=dict(m.labels),
        timings_s={"resample": t1 - t0, "inference": t2 - t1},
    )


_DEFAULT_MODEL: OnnxModel | None = None
_LOCK = threading.Lock()


def default_model() -> OnnxModel:
    """The shipped CT vertebra model, loaded (and checksum-verified) once per process."""
    global _DEFAULT_MODEL  # noqa: PLW0603 - process-wide cache of an immutable session
    with _LOCK:
        if _DEFAULT_MODEL is None:
            _DEFAULT_MODEL = load_model(default_ct_model_dir())
        return _DEFAULT_MODEL


def segment_for_analysis(volume: Volume) -> Segmentation:
    """The CT analyser's segment function: labels + bodies on the input grid, with ModelInfo.

    Raises ``NotAnalysable`` (the analyser's refusal) when the model cannot be loaded.
    """
    from osteo_node.models import ModelError
    from osteo_node.pipeline.ct.analyser import NotAnalysable, Segmentation
    from osteo_node.pipeline.ct.levels import segment_vertebrae

    try:
        model = default_model()
    except ModelError as exc:
        raise NotAnalysable(f"vertebra segmentation model not available: {exc}") from exc
    seg = segment_vertebrae(volume, model)
    return Segmentation(labels=seg.labels, bodies=seg.bodies.array, model=model.info,
                        heights_unmeasurable=seg.cut_endplates,
                        body_confidence=seg.body_confidence, partial=seg.partial)
