"""Anterior, middle and posterior heights of a vertebral body on its mid-sagittal plane.

Heights are a pure function of a binary vertebral-body mask and its :class:`Geometry` (no image
values), so the MR pipeline reuses :func:`measure_heights` unchanged.

Heights are measured on the mid-sagittal plane of the body frame (:mod:`.body_frame`; a thin
left-right slab, median over its planes) along SI lines at the anterior, middle and posterior
positions of the body (inset from the anterior and posterior edges by a fraction of the AP
depth, so rounded corners do not shorten them). Each plane of the section is cleaned first: gaps
of at most ``height_gap_bridge_mm`` along SI bridged, enclosed holes filled, and only the
in-plane piece of body at the body's centre kept. A height is then the SI extent of that piece
along the line: a hollow (low-density) or notched mask, or the posterior-wall gap of the
basivertebral vein, does not shorten it; a separate fragment does not lengthen it.

The heights are measured again on planes tilted by ``stability_tilt_deg`` (sagittally and
coronally) and moved by ``stability_shift_mm`` to either side.
:attr:`HeightMeasurement.instability` is the largest median absolute deviation of a height over
the seven planes, relative to its median: a well-formed body, fractured or not, gives nearly the
same heights on every plane (one plane through a gap changes nothing); a ragged segmentation
does not (the CT analysis does not grade a body whose heights are unstable:
``quality.max_height_instability``). The reported heights are the measurement plane's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from osteo_node.pipeline.results import HeightLine, Heights
from osteo_node.pipeline.stages.body_frame import (
    BodyFrame,
    Vec,
    body_frame,
    crop_mask,
    touches_border,
    unit,
)
from osteo_node.pipeline.stages.measure_params import MeasureParams
from osteo_node.pipeline.types import Geometry

MAX_ENDPLATE_TILT_COS = float(np.cos(np.radians(35.0)))  # endplate alignment: at most 35 deg
TILT_TOLERANCE = float(np.tan(np.radians(1.0)))  # endplates aligned within 1 deg: done
ALIGN_ITERATIONS = 3


@dataclass(frozen=True)
class HeightMeasurement:
    heights: Heights
    frame: BodyFrame
    ap_depth_mm: float
    truncated: bool
    notes: tuple[str, ...] = ()
    #: where each height was measured (on the mid-plane, its length = the reported height)
    lines: tuple[HeightLine, ...] = ()
    #: the largest relative median absolute deviation of a height over the measurement plane
    #: and the six perturbed ones (see the module docstring); None when not checked
    instability: float | None = None


def _bridged(planes: NDArray[np.bool_], bridge: int) -> NDArray[np.bool_]:
    """``planes`` [..., v, u] with gaps of at most ``bridge`` samples along v between True
    samples filled (a closing along v only; nothing grows past the first and last True)."""
    if bridge <= 0:
        return planes
    length = bridge + 1
    shape = (1,) * (planes.ndim - 2) + (length, 1)
    pad = [(0, 0)] * (planes.ndim - 2) + [(length, length), (0, 0)]
    closed = ndimage.binary_closing(np.pad(planes, pad), structure=np.ones(shape, dtype=bool))
    return np.asarray(closed[..., length:-length, :])


# 4-connected within each [v, u] plane, never across planes
_IN_PLANE = np.zeros((3, 3, 3), dtype=bool)
_IN_PLANE[1] = [[0, 1, 0], [1, 1, 1], [0, 1, 0]]


def _keep_centre_piece(filled: NDArray[np.bool_], centre_row: int) -> NDArray[np.bool_]:
    """Per plane of ``filled`` [w, v, u], only the piece crossing the centre row most (else
    the largest); a plane of one piece stays as it is."""
    lab, _ = ndimage.label(filled, structure=_IN_PLANE)
    out = filled.copy()
    for w, plane in enumerate(lab):
        pieces = np.unique(plane[plane > 0])
        if pieces.size <= 1:
            continue
        ids = plane[centre_row][plane[centre_row] > 0]
        out[w] = plane == int(np.bincount(ids if ids.size else plane[plane > 0]).argmax())
    return out


def _clean_section(sampled: NDArray[np.bool_], centre_row: int, bridge: int
                   ) -> NDArray[np.bool_]:
    """Each [v, u] plane of a section: SI gaps of at most ``bridge`` samples bridged, enclosed
    holes filled, and only the connected piece at (or nearest to) the centre row kept."""
    if not sampled.any():
        return sampled
    filled = ndimage.binary_fill_holes(_bridged(sampled, bridge), structure=_IN_PLANE)
    return _keep_centre_piece(np.asarray(filled, dtype=bool), centre_row)


def _clean_plane(plane: NDArray[np.bool_], centre_row: int, bridge: int) -> NDArray[np.bool_]:
    """:func:`_clean_section` of one plane."""
    return _clean_section(plane[None], centre_row, bridge)[0]


def _extent(column: NDArray[np.bool_]) -> int:
    """Samples from the first to the last True of ``column`` (0 when none)."""
    on = np.flatnonzero(column)
    return 0 if on.size == 0 else int(on[-1] - on[0] + 1)


def _robust_edges(section: NDArray[np.bool_]) -> tuple[int, int]:
    """Posterior/anterior edge columns of a sagittal section [v, u] from its central rows.

    Median of the per-row extremes over the central half of the body height, so osteophytes and
    rounded or lipped endplate corners do not move the edges (a wedged body keeps its anterior
    wall at mid-height).
    """
    rows = np.flatnonzero(section.any(axis=1))
    lo, hi = int(rows.min()), int(rows.max())
    quarter = (hi - lo) / 4.0
    central = [r for r in rows if lo + quarter <= r <= hi - quarter] or list(rows)
    posts = [int(np.flatnonzero(section[r]).min()) for r in central]
    ants = [int(np.flatnonzero(section[r]).max()) for r in central]
    return round(float(np.median(posts))), round(float(np.median(ants)))


@dataclass(frozen=True)
class _Section:
    sampled: NDArray[np.bool_]  # (w, v, u) mask samples on the slab around the mid-plane
    u: Vec
    v: Vec
    n_w: int
    frame: BodyFrame  # the frame the section was sampled in

    @property
    def mid(self) -> NDArray[np.bool_]:
        return self.sampled[self.n_w]

    @property
    def centre_row(self) -> int:
        return int(np.argmin(np.abs(self.v)))


@dataclass(frozen=True)
class _CroppedBody:
    crop: NDArray[np.bool_]
    offset: NDArray[np.int64]  # [k, j, i] of the crop's first voxel
    points: Vec  # LPS mm of the body voxels


def _sample_section(
    body: _CroppedBody, geometry: Geometry, frame: BodyFrame, params: MeasureParams
) -> _Section:
    rel = body.points - frame.centre
    u_all, v_all = rel @ frame.ap, rel @ frame.si
    step = params.sample_step_mm
    u = np.arange(u_all.min() - 2 * step, u_all.max() + 2 * step, step)
    v = np.arange(v_all.min() - 3 * step, v_all.max() + 3 * step, step)
    n_w = round(params.slab_half_width_mm / step)
    w = np.arange(-n_w, n_w + 1) * step
    # sampling grid (w, v, u) -> LPS -> continuous index into the crop
    lps = (
        frame.centre
        + w[:, None, None, None] * frame.lr
        + v[None, :, None, None] * frame.si
        + u[None, None, :, None] * frame.ap
    )
    ijk = geometry.lps_to_index(lps.reshape(-1, 3)) - body.offset[::-1]
    sampled = ndimage.map_coordinates(
        body.crop.astype(np.float32), ijk[:, ::-1].T, order=1, mode="constant", cval=0.0
    ).reshape(len(w), len(v), len(u)) >= 0.5
    centre_row = int(np.argmin(np.abs(v)))
    bridge = round(params.height_gap_bridge_mm / step)
    return _Section(_clean_section(sampled, centre_row, bridge), u, v, n_w, frame)


def _endplate_slope(section: _Section, post_edge: int, ant_edge: int) -> float | None:
    """Mean slope dv/du of the upper and lower endplates over the central 70% of the depth."""
    mid = section.mid
    span = ant_edge - post_edge
    cols = range(post_edge + int(0.15 * span), ant_edge - int(0.15 * span) + 1)
    us, tops, bottoms = [], [], []
    for c in cols:
        on = np.flatnonzero(mid[:, c])
        if on.size == 0:
            continue
        us.append(section.u[c])
        tops.append(section.v[on[-1]])
        bottoms.append(section.v[on[0]])
    if len(us) < 4:
        return None
    return float((np.polyfit(us, tops, 1)[0] + np.polyfit(us, bottoms, 1)[0]) / 2.0)


def _tilted_frame(frame: BodyFrame, slope: float, start_si: Vec) -> BodyFrame | None:
    """The frame with SI tilted to level the endplates, or None past the maximum tilt."""
    si = unit(frame.si - slope * frame.ap)
    if si @ start_si < MAX_ENDPLATE_TILT_COS:
        return None
    ap = unit(frame.ap - (frame.ap @ si) * si)
    return BodyFrame(frame.centre, si, ap, np.cross(si, ap))


@dataclass(frozen=True)
class _Aligned:
    frame: BodyFrame
    section: _Section  # the last section sampled (before the frame's last tilt, if any)
    post_edge: int
    ant_edge: int


def _align_to_endplates(
    body: _CroppedBody, geometry: Geometry, frame: BodyFrame, params: MeasureParams
) -> _Aligned | BodyFrame:
    """Tilt the SI axis in the mid-sagittal plane until the endplates are level.

    Returns the frame alone when a mid-sagittal section comes out empty.
    """
    start_si = frame.si
    for _ in range(ALIGN_ITERATIONS):
        section = _sample_section(body, geometry, frame, params)
        if not section.mid.any():
            return frame
        post_edge, ant_edge = _robust_edges(section.mid)
        slope = _endplate_slope(section, post_edge, ant_edge)
        if slope is None or abs(slope) < TILT_TOLERANCE:
            break
        tilted = _tilted_frame(frame, slope, start_si)
        if tilted is None:
            break
        frame = tilted
    return _Aligned(frame, section, post_edge, ant_edge)


def _line_positions(aligned: _Aligned, params: MeasureParams) -> dict[str, int]:
    post_edge, ant_edge = aligned.post_edge, aligned.ant_edge
    inset = round(params.height_inset_fraction * (ant_edge - post_edge))
    return {"anterior": ant_edge - inset, "middle": (ant_edge + post_edge) // 2,
            "posterior": post_edge + inset}


def _height_lines(aligned: _Aligned, heights: dict[str, float | None], params: MeasureParams
                  ) -> tuple[HeightLine, ...]:
    """Each reported height as a line on the mid-plane: centred on the body's extent along its
    line there, as long as the reported (median) height, along the frame's SI axis."""
    section = aligned.section
    frame = section.frame
    out = []
    for name, col in _line_positions(aligned, params).items():
        h = heights.get(name)
        on = np.flatnonzero(section.mid[:, col]) if 0 <= col < len(section.u) else np.array([])
        if not h or on.size == 0:
            continue
        v_mid = (section.v[on[0]] + section.v[on[-1]]) / 2.0
        base = frame.centre + section.u[col] * frame.ap
        top = base + (v_mid + h / 2.0) * frame.si
        bottom = base + (v_mid - h / 2.0) * frame.si
        out.append(HeightLine(name, tuple(round(float(x), 3) for x in top),  # type: ignore[arg-type]
                              tuple(round(float(x), 3) for x in bottom)))  # type: ignore[arg-type]
    return tuple(out)


def _heights_on_section(
    aligned: _Aligned, params: MeasureParams
) -> dict[str, float | None]:
    """Median SI extent of the cleaned section along lines at the anterior, middle and posterior
    positions (see the module docstring)."""
    section = aligned.section
    step = params.sample_step_mm
    positions = _line_positions(aligned, params)
    half_line = round(params.line_half_width_mm / step)
    heights: dict[str, float | None] = {}
    n_u = len(section.u)
    for name, col in positions.items():
        runs = [
            _extent(section.sampled[s, :, c])
            for s in range(section.sampled.shape[0])
            for c in range(max(0, col - half_line), min(n_u, col + half_line + 1))
        ]
        runs = [r for r in runs if r > 0]
        heights[name] = float(np.median(runs)) * step if runs else None
    return heights


def _rotated(v: Vec, axis: Vec, degrees: float) -> Vec:
    """``v`` rotated about the unit ``axis`` (Rodrigues)."""
    a = np.radians(degrees)
    return unit(v * np.cos(a) + np.cross(axis, v) * np.sin(a) + axis * (axis @ v) * (1 - np.cos(a)))


def _perturbed_frames(frame: BodyFrame, params: MeasureParams) -> list[BodyFrame]:
    """The measurement frame tilted sagittally and coronally both ways, and moved to both sides."""
    out = []
    for deg in (-params.stability_tilt_deg, params.stability_tilt_deg):
        si = _rotated(frame.si, frame.lr, deg)  # sagittal tilt: the plane stays, lines tilt
        ap = unit(np.cross(frame.lr, si))
        out.append(BodyFrame(frame.centre, si, ap, frame.lr))
        si = _rotated(frame.si, frame.ap, deg)  # coronal tilt: the plane turns
        lr = unit(np.cross(si, frame.ap))
        out.append(BodyFrame(frame.centre, si, frame.ap, lr))
    for d in (-params.stability_shift_mm, params.stability_shift_mm):
        out.append(BodyFrame(frame.centre + d * frame.lr, frame.si, frame.ap, frame.lr))
    return out


HEIGHT_NAMES = ("anterior", "middle", "posterior")


def _frame_heights(body: _CroppedBody, geometry: Geometry, frame: BodyFrame,
                   params: MeasureParams) -> list[dict[str, float | None]]:
    """The heights on each perturbed plane (a plane through no body gives no heights)."""
    out: list[dict[str, float | None]] = []
    for fr in _perturbed_frames(frame, params):
        section = _sample_section(body, geometry, fr, params)
        if not section.mid.any():
            out.append(dict.fromkeys(HEIGHT_NAMES))
            continue
        post_edge, ant_edge = _robust_edges(section.mid)
        out.append(_heights_on_section(_Aligned(fr, section, post_edge, ant_edge), params))
    return out


def _instability(all_heights: list[dict[str, float | None]]) -> float | None:
    """The largest relative median absolute deviation of a height over the planes (a plane
    without the height counts as a full deviation; a height on at most half the planes: 1.0);
    None when nothing was measured."""
    worst: float | None = None
    n = len(all_heights)
    for name in HEIGHT_NAMES:
        values = [float(v) for h in all_heights if (v := h.get(name))]
        if len(values) * 2 <= n:
            if values:
                worst = 1.0
            continue
        med = float(np.median(values))
        devs = [abs(v - med) / med for v in values] + [1.0] * (n - len(values))
        mad = float(np.median(devs))
        worst = mad if worst is None else max(worst, mad)
    return worst


def measure_heights(
    body_mask: NDArray[Any],
    geometry: Geometry,
    si_hint: Vec | None = None,
    ap_hint: Vec | None = None,
    params: MeasureParams | None = None,
    *,
    stability: bool = True,
) -> HeightMeasurement:
    """Anterior, middle and posterior heights (mm) of one vertebral body mask ([k, j, i]).

    The SI axis starts from the hint (or PCA / patient axis) and is then aligned with the body's
    own endplates: it is tilted in the mid-sagittal plane until the mean slope of the upper and
    lower endplates is zero (at most ``MAX_ENDPLATE_TILT_COS`` away from the start).
    ``stability=False`` skips the perturbed planes (instability None), e.g. when the heights
    are measured again on a finer mask.
    """
    params = params or MeasureParams()
    truncated = touches_border(body_mask)
    crop, offset = crop_mask(np.asarray(body_mask, dtype=bool))
    points = geometry.index_to_lps((np.argwhere(crop) + offset)[:, ::-1].astype(np.float64))
    body = _CroppedBody(crop, offset, points)
    aligned = _align_to_endplates(body, geometry, body_frame(points, si_hint, ap_hint), params)
    if isinstance(aligned, BodyFrame):
        return HeightMeasurement(Heights(None, None, None), aligned, 0.0, truncated,
                                 ("mid-sagittal section empty",))
    heights = _heights_on_section(aligned, params)
    instability = (_instability([heights, *_frame_heights(body, geometry, aligned.frame, params)])
                   if stability else None)
    depth = (aligned.ant_edge - aligned.post_edge + 1) * params.sample_step_mm
    notes: list[str] = []
    if truncated:
        notes.append("body touches the edge of the scanned volume: heights unreliable")
    return HeightMeasurement(
        Heights(heights["anterior"], heights["middle"], heights["posterior"]),
        aligned.frame, depth, truncated, tuple(notes), _height_lines(aligned, heights, params),
        instability,
    )
