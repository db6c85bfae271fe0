"""Curved mid-sagittal reformat of a [k, j, i] volume: canonical axis order, the spine's
left-right midline per feet-head row (interpolated between vertebra centroids) and the planes
sampled along it."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage


def _layout(direction: NDArray[np.float64]) -> tuple[tuple[int, int, int], tuple[bool, ...]]:
    """Array axes in [S->I, A->P, R->L] order and whether each runs backwards."""
    # array axis a (0=k, 1=j, 2=i) runs along direction column (2 - a)
    cols = {0: direction[:, 2], 1: direction[:, 1], 2: direction[:, 0]}
    patient_axis = {a: int(np.argmax(np.abs(cols[a]))) for a in cols}  # 0 x(L), 1 y(P), 2 z(S)
    if sorted(patient_axis.values()) != [0, 1, 2]:
        raise ValueError("volume axes are too oblique for a sagittal reformat")
    by_patient = {p: a for a, p in patient_axis.items()}
    order = (by_patient[2], by_patient[1], by_patient[0])  # S, P, L
    # want increasing index = inferior, posterior, left
    wanted_sign = {2: -1.0, 1: 1.0, 0: 1.0}
    flips = tuple(float(np.sign(cols[a][p])) * wanted_sign[p] < 0
                  for p, a in zip((2, 1, 0), order, strict=True))
    return order, flips


def canonical(
    array: NDArray[Any], direction: NDArray[np.float64], spacing: tuple[float, ...]
) -> tuple[NDArray[Any], tuple[float, float, float]]:
    """View of a [k, j, i] array as [S->I, A->P, R->L] with the spacing of those axes."""
    sp = {0: spacing[2], 1: spacing[1], 2: spacing[0]}
    order, flips = _layout(direction)
    view = np.transpose(array, order)
    slices = tuple(slice(None, None, -1) if f else slice(None) for f in flips)
    return view[slices], (sp[order[0]], sp[order[1]], sp[order[2]])


def canonical_index(kji: NDArray[np.float64], direction: NDArray[np.float64],
                    shape: tuple[int, ...]) -> NDArray[np.float64]:
    """Continuous [k, j, i] indices (n, 3) of an array of ``shape`` -> the same points'
    indices in :func:`canonical`'s view (n, 3: S->I, A->P, R->L)."""
    order, flips = _layout(direction)
    out = np.asarray(kji, dtype=np.float64)[:, list(order)]
    for n, (a, f) in enumerate(zip(order, flips, strict=True)):
        if f:
            out[:, n] = shape[a] - 1 - out[:, n]
    return out


def label_points(labels_c: NDArray[Any]) -> list[tuple[int, NDArray[np.int64]]]:
    """(value, voxel indices) of every label, found via bounding boxes (no full-size masks)."""
    out = []
    for n, box in enumerate(ndimage.find_objects(labels_c), start=1):
        if box is None:
            continue
        idx = np.argwhere(labels_c[box] == n)
        out.append((n, idx + np.array([s.start for s in box])))
    return out


def midline(labels_c: NDArray[Any] | None, n_rows: int, n_lr: int) -> NDArray[np.int64]:
    """Left-right index of the spine per feet-head row, interpolated between vertebrae."""
    if labels_c is None or not labels_c.any():
        return np.full(n_rows, n_lr // 2, dtype=np.int64)
    rows, lrs = [], []
    for _value, idx in label_points(labels_c):
        rows.append(idx[:, 0].mean())
        lrs.append(np.median(idx[:, 2]))
    order = np.argsort(rows)
    lr = np.interp(np.arange(n_rows), np.asarray(rows)[order], np.asarray(lrs)[order])
    return np.clip(np.round(lr), 0, n_lr - 1).astype(np.int64)


def slab_plane(img_c: NDArray[Any], mid: NDArray[np.int64], half: int) -> NDArray[Any]:
    """(S, A) plane: the mean of the left-right slab mid +- half around the curved midline."""
    n_si, n_ap, n_lr = img_c.shape
    offsets = np.arange(-half, half + 1)
    lr_idx = np.clip(mid[:, None] + offsets[None, :], 0, n_lr - 1)  # (S, slab)
    rows = np.arange(n_si)[:, None, None]
    aps = np.arange(n_ap)[None, :, None]
    return np.asarray(img_c[rows, aps, lr_idx[:, None, :]].mean(axis=2))


def midline_plane(lab_c: NDArray[Any], mid: NDArray[np.int64]) -> NDArray[Any]:
    """(S, A) labels sampled on the curved midline."""
    n_si, n_ap, _ = lab_c.shape
    return np.asarray(lab_c[np.arange(n_si)[:, None], np.arange(n_ap)[None, :], mid[:, None]])
