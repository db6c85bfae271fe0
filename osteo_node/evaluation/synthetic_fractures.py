"""Real vertebrae deformed into compression fractures, to measure fracture detection.

Labelled CT with real fractures is not available here, so real vertebral bodies of labelled
real CT are deformed into the three Genant shapes, along the column (the frame of
``osteo_node.pipeline.ct.straighten``):

- **wedge**: the anterior height is lost, none in the posterior sixth of the body (the posterior
  wall stays intact; linear in between), and the column above follows the collapsed endplate
  (the segment angulates forward: the kyphosis of a real wedge fracture; the disc above keeps
  its thickness);
- **biconcave**: the centres of both endplates sink (smooth domes, deepest in the middle of the
  body in both directions, the rims kept; half the loss at each endplate) and the discs bulge
  into them: each dome is filled with the disc's own soft tissue (its least dense row at that
  point, so a thin disc is not stretched into a band of endplate bone);
- **crush**: the whole body is lower and the column above it (inside the straightened tube,
  tapered outside) comes down with it, so no disc is stretched.

An earlier version filled a wedge's lost height with the disc above, stretched: where the disc
is thin (s0009 T12/L1: 1-3 mm), that stretched the endplates on both sides of it into a
vertically streaked band of bone-bright tissue (250-330 HU) where the disc should be, an image
no real fracture gives, which the network then outlined as body.

The body's bone is compressed with it. Image and reference labels go through the same warp
(image: linear, labels: nearest), so the reference grade of a case is the project's height
measurement on the *deformed reference body*, independent of the pipeline under test.

:func:`calibrated_deform` sizes the deformation so that the *measured* loss of its kind (Genant:
anterior vs posterior height for a wedge, middle vs posterior for a biconcave body, posterior
height vs the neighbours' for a crush) reaches the requested value on the reference body: a
vertebra that is naturally a little wedge-shaped, or a rounded anterior corner, would otherwise
make a "grade 3" deformation look like a grade 1.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from osteo_node.pipeline.ct.straighten import StraightFrame
from osteo_node.pipeline.results import Heights
from osteo_node.pipeline.stages.body_heights import measure_heights
from osteo_node.pipeline.types import Volume

KINDS = ("wedge", "biconcave", "crush")
TAPER_MM = 5.0
WEDGE_HINGE = 1 / 6  # fraction of the depth, from the posterior wall, that a wedge leaves intact
RIM = 0.1  # fraction of the depth / width at each side where a biconcave endplate keeps its rim
MAX_FRACTION = 0.9
CALIBRATION_TOLERANCE = 0.015  # measured loss within this of the requested one
CALIBRATION_STEPS = 6
#: largest change of the amplitude per calibration step: a body's measured loss can stall over
#: a range of amplitudes (a corner lip holding the anterior height), and one long secant step
#: past it lands in a collapse no real fracture looks like
MAX_STEP = 0.15
TUBE_TAPER_MM = 15.0  # the column above a crushed body comes down; tissue beyond blends


@dataclass(frozen=True)
class Deformation:
    kind: str  # wedge | biconcave | crush
    loss: float  # largest fractional height loss (0..1)


def _loss_field(kind: str, loss: float, t_ap: NDArray[np.float64],
                t_lr: NDArray[np.float64]) -> NDArray[np.float64]:
    """Fractional height loss over the body's footprint (t_ap: 0 posterior wall .. 1 anterior;
    t_lr: 0 .. 1 across the body)."""
    if kind == "wedge":
        return np.asarray(loss * np.clip((t_ap - WEDGE_HINGE) / (1 - WEDGE_HINGE), 0, 1))
    if kind == "biconcave":
        def dome(t: NDArray[np.float64]) -> NDArray[np.float64]:
            x = np.clip((t - RIM) / (1 - 2 * RIM), 0, 1)
            return np.asarray(np.sin(np.pi * x) ** 2)

        return np.asarray(loss * dome(t_ap) * np.sqrt(dome(t_lr)))
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


def _source_rows(z: NDArray[np.float64], frac: NDArray[np.float64], z_lo: float, z_hi: float,
                 kind: str, soft: tuple[NDArray[np.float64], NDArray[np.float64]] | None = None,
                 ) -> NDArray[np.float64]:
    """Rows of the undeformed image that each output row shows (inverse warp; z increases
    cranially). A wedge or crush lowers the upper endplate by ``frac`` of the height and the
    column above comes down with it; a biconcave body loses half of it at each endplate and
    the space is filled with the disc's row ``soft`` = (above, below) until the disc's own rows
    resume."""
    height = z_hi - z_lo
    top_loss = frac / 2 if kind == "biconcave" else frac
    bottom_loss = frac / 2 if kind == "biconcave" else np.zeros_like(frac)
    new_top = z_hi - height * top_loss
    new_bottom = z_lo + height * bottom_loss
    inside = z_lo + (z - new_bottom) * height / np.maximum(1e-3, new_top - new_bottom)
    if kind in ("crush", "wedge"):
        above = z + (z_hi - new_top)  # everything above comes down by the height lost
        src = np.where(z <= new_top, inside, above)
        return np.where(z < z_lo, z, src)
    if soft is None:
        raise ValueError("a biconcave deformation needs the discs' soft rows")
    soft_up, soft_down = soft
    # blended in over the first 5 % of loss, so the warp stays continuous at the dome's rim
    w = np.clip(frac / 0.05, 0, 1)
    up = z + w * (np.maximum(soft_up, z) - z)
    down = z + w * (np.minimum(soft_down, z) - z)
    return np.where(z > new_top, up, np.where(z < new_bottom, down, inside))


def _disc_fill(volume: Volume, labels: NDArray[np.integer], frame: StraightFrame,
               uv: tuple[NDArray[np.float64], NDArray[np.float64]], frac: NDArray[np.float64],
               rows: tuple[float, float, float]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per sample: the disc's least dense row above and below the body (``rows``: the body's
    lowest and highest row, the disc's height), found once per (u, v) cell of the frame where
    the body loses height."""
    u, v = uv
    z_lo, z_hi, disc = rows
    up = np.full(u.shape, z_hi)
    down = np.full(u.shape, z_lo)
    moved = frac > 0
    if not moved.any():
        return up, down
    cells, inverse = np.unique(np.stack([np.rint(u[moved]), np.rint(v[moved])], axis=1),
                               axis=0, return_inverse=True)
    inverse = inverse.ravel()
    scan = (volume, labels, frame)
    # from the body's middle: its endplates' centres lie well inside its extremes
    mid = (z_lo + z_hi) / 2.0
    up[moved] = _softest_rows(scan, cells, (mid, z_hi + disc), -np.inf)[inverse]
    down[moved] = _softest_rows(scan, cells, (z_lo - disc, mid), np.inf)[inverse]
    return up, down


def _softest_rows(scan: tuple[Volume, NDArray[np.integer], StraightFrame],
                  cells: NDArray[np.float64], window: tuple[float, float], edge: float
                  ) -> NDArray[np.float64]:
    """Per (u, v) cell: the row in ``window`` (frame rows) where the image is least dense
    (smoothed over 1.5 rows) among the rows no vertebra is labelled at: the disc's interior
    there (a vertebra's own trabecular bone can be less dense than the disc); ``edge`` where
    there is none (-inf above the body, +inf below: the rows are left as they are)."""
    volume, labels, frame = scan
    rows = np.arange(window[0], window[1] + 0.25, 0.5)
    n = len(rows)
    lps = frame.lps_of(np.tile(rows, len(cells)), np.repeat(cells[:, 0], n),
                       np.repeat(cells[:, 1], n))
    ijk = volume.geometry.lps_to_index(lps)
    at = [ijk[:, 2], ijk[:, 1], ijk[:, 0]]
    hu = ndimage.map_coordinates(volume.array, at, order=1, mode="nearest",
                                 prefilter=False).reshape(len(cells), n).astype(np.float64)
    free = ndimage.map_coordinates(labels, at, order=0, mode="nearest",
                                   prefilter=False).reshape(len(cells), n) == 0
    # half a row away from any labelled row, so the fill's own labels (nearest row) are the
    # disc's too
    free = ndimage.binary_erosion(free, structure=np.ones((1, 3), dtype=bool),
                                  border_value=1)
    hu = np.where(free, ndimage.uniform_filter1d(hu, size=3, axis=1, mode="nearest"), np.inf)
    best = np.argmin(hu, axis=1)
    # no disc row at the cell (the vertebrae's labels touch across a thin disc): no fill there
    return np.where(free.any(axis=1), rows[best], edge)


def _region(body: NDArray[np.bool_], volume: Volume, frame: StraightFrame, margin_mm: float,
            to_top: bool) -> tuple[slice, ...]:
    """Index box of the input grid around the body (to the top of the scan for a crush)."""
    box_idx = np.argwhere(ndimage.binary_dilation(body, iterations=3))
    grow = np.ceil(margin_mm / np.array(volume.geometry.spacing[::-1])).astype(int)
    lo_idx = np.maximum(0, box_idx.min(axis=0) - grow)
    hi_idx = np.minimum(volume.array.shape, box_idx.max(axis=0) + 1 + grow)
    if to_top:  # the whole column above, whichever index direction is cranial
        corner = volume.geometry.index_to_lps(np.zeros(3))
        k_up = volume.geometry.index_to_lps(np.array([0.0, 0.0, 1.0]))[2] > corner[2]
        if k_up:
            hi_idx[0] = volume.array.shape[0]
        else:
            lo_idx[0] = 0
        lo_idx[1:] = 0
        hi_idx[1:] = volume.array.shape[1:]
    return tuple(slice(int(a), int(b)) for a, b in zip(lo_idx, hi_idx, strict=True))


def deform(volume: Volume, labels: NDArray[np.integer], body: NDArray[np.bool_],
           frame: StraightFrame, deformation: Deformation, fill_mm: float = 8.0,
           ) -> tuple[Volume, NDArray[np.integer]]:
    """The volume and label map with ``body`` (a mask on the volume's grid) compressed.

    ``fill_mm``: the height of the disc above (biconcave: where its least dense row is looked
    for; the disc below is searched as far down)."""
    z_lo, z_hi, u_lo, u_hi, v_lo, v_hi = _body_extent(body, volume, frame)
    taper = TAPER_MM / frame.step
    disc = max(2.0, fill_mm / frame.step)
    column_follows = deformation.kind in ("crush", "wedge")
    sl = _region(body, volume, frame, fill_mm + 3 * TAPER_MM + TUBE_TAPER_MM, column_follows)
    kk, jj, ii = np.meshgrid(*[np.arange(s.start, s.stop, dtype=np.float64) for s in sl],
                             indexing="ij")
    ijk = np.stack([ii.ravel(), jj.ravel(), kk.ravel()], axis=1)
    s = frame.index_of(volume.geometry.index_to_lps(ijk))
    z, u, v = s[:, 0], s[:, 1], s[:, 2]
    t_ap = np.clip((u_hi - u) / max(1e-3, u_hi - u_lo), 0, 1)  # u increases posteriorly
    t_lr = np.clip((v - v_lo) / max(1e-3, v_hi - v_lo), 0, 1)
    # a crush or wedge takes the body's (upper endplate's) level down inside the straightened
    # tube (blending out beyond it) and the column above comes down with it; a biconcave body
    # stays in its footprint
    beyond = np.maximum.reduce([-u, u - (frame.nu - 1), -v, v - (frame.nv - 1),
                                np.zeros_like(u)])
    weight = np.clip(1 - beyond / (TUBE_TAPER_MM / frame.step), 0, 1)
    soft = None
    if column_follows:
        field = _loss_field(deformation.kind, deformation.loss, t_ap, t_lr)
        frac = np.minimum(field * weight, MAX_FRACTION)
    else:
        frac = _loss_field(deformation.kind, deformation.loss, t_ap, t_lr)
        outside = np.maximum.reduce([u_lo - u, u - u_hi, v_lo - v, v - v_hi, np.zeros_like(u)])
        frac = np.minimum(frac * np.clip(1 - outside / taper, 0, 1), MAX_FRACTION)
        soft = _disc_fill(volume, labels, frame, (u, v), frac, (z_lo, z_hi, disc))
    src = _source_rows(z, frac, z_lo, z_hi, deformation.kind, soft)
    src_ijk = volume.geometry.lps_to_index(frame.lps_of(src, u, v))
    coords = [src_ijk[:, 2], src_ijk[:, 1], src_ijk[:, 0]]
    shape = tuple(x.stop - x.start for x in sl)
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


def measured_loss(kind: str, heights: Heights, posterior_reference: float | None
                  ) -> float | None:
    """The Genant loss of ``kind`` from measured heights (as :mod:`..stages.grade` computes
    it): wedge 1 - Ha/Hp, biconcave 1 - Hm/Hp, crush 1 - Hp/Hp_ref."""
    a, m, p = heights.anterior, heights.middle, heights.posterior
    if not p:
        return None
    if kind == "wedge":
        return None if a is None else 1 - a / p
    if kind == "biconcave":
        return None if m is None else 1 - m / p
    if kind == "crush":
        return None if not posterior_reference else 1 - p / posterior_reference
    raise ValueError(f"unknown fracture kind {kind!r}")


@dataclass(frozen=True)
class FractureTarget:
    """What :func:`calibrated_deform` makes: a fracture of ``kind`` whose measured loss is
    ``loss``. ``posterior_reference``: the neighbours' posterior height (mm, for a crush);
    ``fill_mm``: the height of the disc above (see :func:`deform`)."""

    kind: str
    loss: float
    posterior_reference: float | None = None
    fill_mm: float = 8.0


@dataclass(frozen=True)
class Calibrated:
    volume: Volume
    labels: NDArray[np.integer]
    amplitude: float  # the deformation's loss parameter that was used
    achieved: float | None  # the measured loss of the kind on the deformed reference body


def calibrated_deform(volume: Volume, labels: NDArray[np.integer], body: NDArray[np.bool_],
                      frame: StraightFrame, target: FractureTarget,
                      body_after: Callable[[NDArray[np.integer]], NDArray[np.bool_]],
                      ) -> Calibrated:
    """:func:`deform` with its amplitude adjusted (secant steps on the measured loss) until the
    loss of ``target.kind`` measured on the deformed body (``body_after(labels)``) is within
    ``CALIBRATION_TOLERANCE`` of ``target.loss``; the closest try is returned."""
    def run(amp: float) -> Calibrated:
        vol2, lab2 = deform(volume, labels, body, frame, Deformation(target.kind, amp),
                            target.fill_mm)
        # the deformation's own size: heights on the measurement plane alone (the analysis
        # then measures the deformed body its own way, seven planes)
        heights = measure_heights(body_after(lab2), volume.geometry, stability=False).heights
        return Calibrated(vol2, lab2, amp,
                          measured_loss(target.kind, heights, target.posterior_reference))

    def error(c: Calibrated) -> float:
        return float("inf") if c.achieved is None else c.achieved - target.loss

    before = measured_loss(target.kind, measure_heights(body, volume.geometry,
                                                        stability=False).heights,
                           target.posterior_reference) or 0.0
    # first guess: what is still to lose, as a fraction of what is left
    tries = [run(float(np.clip(1 - (1 - target.loss) / max(1e-3, 1 - before), 0.02,
                               MAX_FRACTION)))]
    while len(tries) <= CALIBRATION_STEPS and abs(error(tries[-1])) > CALIBRATION_TOLERANCE \
            and tries[-1].achieved is not None:
        last = tries[-1]
        slope = 1.0
        if len(tries) > 1 and tries[-2].achieved is not None:
            d_amp = last.amplitude - tries[-2].amplitude
            if abs(d_amp) > 1e-4:
                slope = max(0.2, (error(last) - error(tries[-2])) / d_amp)
        step = float(np.clip(-error(last) / slope, -MAX_STEP, MAX_STEP))
        tries.append(run(float(np.clip(last.amplitude + step, 0.02, MAX_FRACTION))))
    return min(tries, key=lambda c: abs(error(c)))
