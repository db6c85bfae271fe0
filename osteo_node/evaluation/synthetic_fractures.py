"""Real vertebrae deformed into compression fractures, to measure fracture detection.

Labelled CT with real fractures is not available here, so real vertebral bodies of labelled
real CT are deformed into the three Genant shapes: **wedge** (anterior height lost, none at the
posterior wall), **biconcave** (the centre of the endplate sinks, most in the middle of the body
in both directions) and **crush** (the whole body lower). The deformation moves the upper
endplate down along the column (the column frame of ``osteo_node.pipeline.ct.straighten``, so
an inclined column is compressed along its own axis); the body's bone is compressed with it and
the disc above slides into the space (``FILL_MM`` above the old endplate), as in a real
fracture with the adjacent disc bulging into it. Image and reference labels go through the same
warp (image: linear, labels: nearest), so the reference grade of a case is the project's
height measurement on the *deformed reference body*, independent of the pipeline under test.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from osteo_node.pipeline.ct.straighten import StraightFrame
from osteo_node.pipeline.types import Volume

KINDS = ("wedge", "biconcave", "crush")
FILL_MM = 12.0
TAPER_MM = 5.0


@dataclass(frozen=True)
class Deformation:
    kind: str  # wedge | biconcave | crush
    loss: float  # largest fractional height loss (0..1)


def _loss_field(kind: str, loss: float, t_ap: NDArray[np.float64],
                t_lr: NDArray[np.float64]) -> NDArray[np.float64]:
    """Fractional height loss over the body's footprint (t_ap: 0 posterior wall .. 1 anterior;
    t_lr: 0 .. 1 across the body)."""
    if kind == "wedge":
        return np.asarray(loss * t_ap)
    if kind == "biconcave":
        return np.asarray(loss * (1 - np.abs(2 * t_ap - 1)) * np.sqrt(1 - np.abs(2 * t_lr - 1)))
    if kind == "crush":
        return np.full(np.broadcast(t_ap, t_lr).shape, loss)
    raise ValueError(f"unknown fracture kind {kind!r}")


def _body_extent(body: NDArray[np.bool_], volume: Volume, frame: StraightFrame
                 ) -> tuple[float, float, float, float, float, float]:
    """Rows (z), u and v extent of a body in the frame (continuous indices)."""
    idx = np.argwhere(body)
    s = frame.index_of(volume.geometry.index_to_lps(idx[:, ::-1].astype(np.float64)))
    lo, hi = np.percentile(s, 1, axis=0), np.percentile(s, 99, axis=0)
    return float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1]), float(lo[2]), float(hi[2])


def deform(volume: Volume, labels: NDArray[np.integer], body: NDArray[np.bool_],
           frame: StraightFrame, deformation: Deformation) -> tuple[Volume, NDArray[np.integer]]:
    """The volume and label map with ``body`` (a mask on the volume's grid) compressed."""
    z_lo, z_hi, u_lo, u_hi, v_lo, v_hi = _body_extent(body, volume, frame)
    fill = FILL_MM / frame.step
    taper = TAPER_MM / frame.step
    reach = z_hi + fill
    # the affected region on the input grid: the body and the space above it, with margins
    box_idx = np.argwhere(ndimage.binary_dilation(body, iterations=3))
    lo_idx = box_idx.min(axis=0)
    hi_idx = box_idx.max(axis=0) + 1
    grow = np.ceil(np.array([fill + taper] * 3) * frame.step
                   / np.array(volume.geometry.spacing[::-1])).astype(int)
    lo_idx = np.maximum(0, lo_idx - grow)
    hi_idx = np.minimum(volume.array.shape, hi_idx + grow)
    sl = tuple(slice(int(a), int(b)) for a, b in zip(lo_idx, hi_idx, strict=True))
    kk, jj, ii = np.meshgrid(*[np.arange(s.start, s.stop, dtype=np.float64) for s in sl],
                             indexing="ij")
    ijk = np.stack([ii.ravel(), jj.ravel(), kk.ravel()], axis=1)
    s = frame.index_of(volume.geometry.index_to_lps(ijk))
    z, u, v = s[:, 0], s[:, 1], s[:, 2]
    t_ap = np.clip((u_hi - u) / max(1e-3, u_hi - u_lo), 0, 1)  # u increases posteriorly
    t_lr = np.clip((v - v_lo) / max(1e-3, v_hi - v_lo), 0, 1)
    frac = _loss_field(deformation.kind, deformation.loss, t_ap, t_lr)
    outside = np.maximum.reduce([u_lo - u, u - u_hi, v_lo - v, v - v_hi, np.zeros_like(u)])
    frac = frac * np.clip(1 - outside / taper, 0, 1)
    frac = np.minimum(frac, 0.9)
    new_top = z_lo + (z_hi - z_lo) * (1 - frac)
    src = np.where(z <= new_top, z_lo + (z - z_lo) / (1 - frac),
                   z_hi + (z - new_top) * (reach - z_hi) / np.maximum(1e-3, reach - new_top))
    src = np.where((z < z_lo) | (z > reach), z, src)
    src_lps = frame.lps_of(src, u, v)
    src_ijk = volume.geometry.lps_to_index(src_lps)
    coords = [src_ijk[:, 2], src_ijk[:, 1], src_ijk[:, 0]]
    shape = tuple(s.stop - s.start for s in sl)
    image = volume.array.copy()
    image[sl] = ndimage.map_coordinates(volume.array, coords, order=1, mode="nearest",
                                        prefilter=False).reshape(shape)
    out_labels = labels.copy()
    out_labels[sl] = ndimage.map_coordinates(labels, coords, order=0, mode="nearest",
                                             prefilter=False).reshape(shape)
    deformed = Volume(array=image, geometry=volume.geometry, modality=volume.modality,
                      study_instance_uid=volume.study_instance_uid,
                      series_instance_uid=volume.series_instance_uid, sources=volume.sources,
                      header=volume.header, description=volume.description)
    return deformed, out_labels
