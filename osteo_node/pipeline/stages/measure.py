"""Per-vertebra measurements: centroid, trabecular ROI with HU statistics, body heights.

Heights are a pure function of a binary vertebral-body mask and its :class:`Geometry` (no image
values), so the MR pipeline reuses :func:`measure_heights` unchanged.

Body frame: the superior-inferior (SI) axis comes from the local spine direction (caller's hint,
e.g. the line through the neighbouring body centroids) or, without a hint, from the principal
axis of the body closest to the patient's feet-head axis; the anterior-posterior (AP) axis from
the direction vertebra centroid -> body centroid (the spinal canal and posterior elements lie
behind the body) or, without it, the principal axis closest to the patient's anterior direction;
both are orthogonalised. The mid-sagittal plane is the SI/AP plane through the body centroid.

Heights are measured on that plane (a thin left-right slab, median over its planes) along SI
lines at the anterior, middle and posterior positions of the body (inset from the anterior and
posterior edges by a fraction of the AP depth, so rounded corners do not shorten them).
Each height is the length of the continuous run of body along the line through the body's
mid-height.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from osteo_node.pipeline.results import Heights, TrabecularHU
from osteo_node.pipeline.types import Geometry

Vec = NDArray[np.float64]
SUPERIOR: Vec = np.array([0.0, 0.0, 1.0])  # LPS
ANTERIOR: Vec = np.array([0.0, -1.0, 0.0])  # LPS
MAX_PCA_TILT_COS = float(np.cos(np.radians(25.0)))  # trust a body's own PCA axis up to 25 deg
MAX_ENDPLATE_TILT_COS = float(np.cos(np.radians(35.0)))  # endplate alignment: at most 35 deg
TILT_TOLERANCE = float(np.tan(np.radians(1.0)))  # endplates aligned within 1 deg: done


@dataclass(frozen=True)
class MeasureParams:
    """Measurement geometry (methodology, not clinical thresholds); see ct_screening.yaml."""

    height_inset_fraction: float = 0.15
    sample_step_mm: float = 0.5
    slab_half_width_mm: float = 2.0
    line_half_width_mm: float = 1.0
    roi_margin_mm: float = 3.0
    roi_depth_fraction: float = 0.5
    roi_min_margin_mm: float = 1.5
    roi_min_volume_mm3: float = 500.0
    vein_posterior_fraction: float = 0.3
    vein_half_width_fraction: float = 0.35

    @classmethod
    def from_mapping(cls, data: dict[str, Any] | None) -> MeasureParams:
        data = data or {}
        return cls(**{
            k: float(v["value"] if isinstance(v, dict) else v)
            for k, v in data.items() if k in cls.__dataclass_fields__
        })

    @classmethod
    def default(cls) -> MeasureParams:
        from osteo_node.clinical_data import load

        return cls.from_mapping(load("ct_screening").get("measurement"))


@dataclass(frozen=True)
class BodyFrame:
    centre: Vec  # LPS mm (body centroid)
    si: Vec  # unit, towards superior
    ap: Vec  # unit, towards anterior
    lr: Vec  # unit, si x ap


@dataclass(frozen=True)
class HeightMeasurement:
    heights: Heights
    frame: BodyFrame
    ap_depth_mm: float
    truncated: bool
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class VertebraMeasurement:
    centroid_mm: tuple[float, float, float]
    trabecular: TrabecularHU | None
    heights: HeightMeasurement | None
    notes: tuple[str, ...] = field(default_factory=tuple)
    truncated: bool = False  # the vertebra touches the edge of the scanned volume


def _crop(mask: NDArray[Any], pad: int = 2) -> tuple[NDArray[np.bool_], NDArray[np.int64]]:
    """Bounding box of the mask with ``pad`` background voxels; returns the crop and its offset."""
    idx = np.argwhere(mask)
    if idx.size == 0:
        raise ValueError("empty mask")
    lo = idx.min(axis=0)
    hi = idx.max(axis=0) + 1
    crop = np.zeros(tuple(int(v) for v in (hi - lo + 2 * pad)), dtype=bool)
    crop[pad:-pad, pad:-pad, pad:-pad] = mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    return crop, lo - pad


def mask_points_mm(mask: NDArray[Any], geometry: Geometry) -> Vec:
    """LPS coordinates (N, 3) of the voxels of a [k, j, i] mask."""
    kji = np.argwhere(mask)
    return geometry.index_to_lps(kji[:, ::-1].astype(np.float64))


def centroid_mm(mask: NDArray[Any], geometry: Geometry) -> Vec:
    kji = np.argwhere(mask).mean(axis=0)
    return geometry.index_to_lps(kji[::-1])


def touches_border(mask: NDArray[Any]) -> bool:
    return bool(
        mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any()
        or mask[:, :, 0].any() or mask[:, :, -1].any()
    )


def _unit(v: Vec) -> Vec:
    return v / float(np.linalg.norm(v))


def _closest_axis(axes: Vec, target: Vec) -> Vec:
    """Column of ``axes`` most parallel to ``target``, signed to point the same way."""
    dots = axes.T @ target
    n = int(np.argmax(np.abs(dots)))
    return axes[:, n] * (1.0 if dots[n] >= 0 else -1.0)


def body_frame(
    points: Vec, si_hint: Vec | None = None, ap_hint: Vec | None = None
) -> BodyFrame:
    """Body axes from its voxel points (LPS mm) and optional spine / canal direction hints."""
    centre = points.mean(axis=0)
    cov = np.cov((points - centre).T)
    _, axes = np.linalg.eigh(cov)
    if si_hint is not None and np.linalg.norm(si_hint) > 0:
        si = _unit(np.asarray(si_hint, dtype=np.float64))
        if si @ SUPERIOR < 0:
            si = -si
    else:
        # smallest-variance axis (bodies are flatter than wide or deep) when it is plausibly
        # the feet-head axis, else the patient's feet-head axis
        thinnest = axes[:, 0] * (1.0 if axes[2, 0] >= 0 else -1.0)
        si = _unit(thinnest) if thinnest @ SUPERIOR >= MAX_PCA_TILT_COS else SUPERIOR.copy()
    if ap_hint is not None and np.linalg.norm(ap_hint) > 0:
        ap = np.asarray(ap_hint, dtype=np.float64)
    else:
        ap = _closest_axis(axes, ANTERIOR)
    ap = ap - (ap @ si) * si
    if np.linalg.norm(ap) < 1e-6:
        ap = ANTERIOR - (ANTERIOR @ si) * si
    ap = _unit(ap)
    if ap @ ANTERIOR < 0 and ap_hint is None:
        ap = -ap
    return BodyFrame(centre=centre, si=si, ap=ap, lr=np.cross(si, ap))


def _run_through(column: NDArray[np.bool_], centre: int) -> int:
    """Length (samples) of the run of True containing ``centre`` or nearest to it."""
    on = np.flatnonzero(column)
    if on.size == 0:
        return 0
    start = int(on[np.argmin(np.abs(on - centre))])
    lo = hi = start
    while lo > 0 and column[lo - 1]:
        lo -= 1
    while hi < len(column) - 1 and column[hi + 1]:
        hi += 1
    return hi - lo + 1


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

    @property
    def mid(self) -> NDArray[np.bool_]:
        return self.sampled[self.n_w]


def _sample_section(
    crop: NDArray[np.bool_], offset: NDArray[np.int64], geometry: Geometry, frame: BodyFrame,
    *, points: Vec, params: MeasureParams,
) -> _Section:
    rel = points - frame.centre
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
    ijk = geometry.lps_to_index(lps.reshape(-1, 3)) - offset[::-1]
    sampled = ndimage.map_coordinates(
        crop.astype(np.float32), ijk[:, ::-1].T, order=1, mode="constant", cval=0.0
    ).reshape(len(w), len(v), len(u)) >= 0.5
    return _Section(sampled, u, v, n_w)


def _endplate_slope(section: _Section, post_edge: int, ant_edge: int) -> float | None:
    """Mean slope dv/du of the upper and lower endplates over the central 70% of the depth."""
    mid = section.mid
    centre_row = int(np.argmin(np.abs(section.v)))
    span = ant_edge - post_edge
    cols = range(post_edge + int(0.15 * span), ant_edge - int(0.15 * span) + 1)
    us, tops, bottoms = [], [], []
    for c in cols:
        on = np.flatnonzero(mid[:, c])
        if on.size == 0:
            continue
        start = int(on[np.argmin(np.abs(on - centre_row))])
        lo = hi = start
        while lo > 0 and mid[lo - 1, c]:
            lo -= 1
        while hi < mid.shape[0] - 1 and mid[hi + 1, c]:
            hi += 1
        us.append(section.u[c])
        tops.append(section.v[hi])
        bottoms.append(section.v[lo])
    if len(us) < 4:
        return None
    return float((np.polyfit(us, tops, 1)[0] + np.polyfit(us, bottoms, 1)[0]) / 2.0)


def measure_heights(
    body_mask: NDArray[Any],
    geometry: Geometry,
    si_hint: Vec | None = None,
    ap_hint: Vec | None = None,
    params: MeasureParams | None = None,
) -> HeightMeasurement:
    """Anterior, middle and posterior heights (mm) of one vertebral body mask ([k, j, i]).

    The SI axis starts from the hint (or PCA / patient axis) and is then aligned with the body's
    own endplates: it is tilted in the mid-sagittal plane until the mean slope of the upper and
    lower endplates is zero (at most ``MAX_ENDPLATE_TILT_DEG`` away from the start).
    """
    params = params or MeasureParams()
    truncated = touches_border(body_mask)
    crop, offset = _crop(np.asarray(body_mask, dtype=bool))
    points = geometry.index_to_lps((np.argwhere(crop) + offset)[:, ::-1].astype(np.float64))
    frame = body_frame(points, si_hint, ap_hint)
    start_si = frame.si
    for _ in range(3):
        section = _sample_section(crop, offset, geometry, frame, points=points, params=params)
        if not section.mid.any():
            return HeightMeasurement(Heights(None, None, None), frame, 0.0, truncated,
                                     ("mid-sagittal section empty",))
        post_edge, ant_edge = _robust_edges(section.mid)
        slope = _endplate_slope(section, post_edge, ant_edge)
        if slope is None or abs(slope) < TILT_TOLERANCE:
            break
        si = _unit(frame.si - slope * frame.ap)
        if si @ start_si < MAX_ENDPLATE_TILT_COS:
            break
        ap = _unit(frame.ap - (frame.ap @ si) * si)
        frame = BodyFrame(frame.centre, si, ap, np.cross(si, ap))
    step = params.sample_step_mm
    depth = (ant_edge - post_edge + 1) * step
    inset = round(params.height_inset_fraction * (ant_edge - post_edge))
    positions = {
        "anterior": ant_edge - inset,
        "middle": (ant_edge + post_edge) // 2,
        "posterior": post_edge + inset,
    }
    centre_row = int(np.argmin(np.abs(section.v)))
    half_line = round(params.line_half_width_mm / step)
    heights: dict[str, float | None] = {}
    n_u = len(section.u)
    for name, col in positions.items():
        runs = [
            _run_through(section.sampled[s, :, c], centre_row)
            for s in range(section.sampled.shape[0])
            for c in range(max(0, col - half_line), min(n_u, col + half_line + 1))
        ]
        runs = [r for r in runs if r > 0]
        heights[name] = float(np.median(runs)) * step if runs else None
    notes: list[str] = []
    if truncated:
        notes.append("body touches the edge of the scanned volume: heights unreliable")
    return HeightMeasurement(
        Heights(heights["anterior"], heights["middle"], heights["posterior"]),
        frame, depth, truncated, tuple(notes),
    )


def trabecular_roi(
    body_mask: NDArray[Any],
    geometry: Geometry,
    frame: BodyFrame,
    params: MeasureParams | None = None,
    exclude_vein: bool = True,
) -> tuple[NDArray[np.bool_], NDArray[np.int64], float]:
    """Trabecular ROI inside a body mask, in the body's bounding-box crop.

    The ROI keeps voxels at least ``roi_margin_mm`` from the body surface, and at least
    ``roi_depth_fraction`` of the deepest voxel's depth (the central core: a body mask that is a
    voxel too wide on a coarse grid would otherwise put cortex and endplate into the ROI; on
    real held-out bodies this moved the mean by tens of HU), and, with ``exclude_vein``, drops
    the posterior-central part where the basivertebral vein enters. Returns (roi crop mask,
    crop offset [k, j, i], margin used).
    When the ROI would be smaller than ``roi_min_volume_mm3`` the margin is relaxed down to
    ``roi_min_margin_mm``.
    """
    params = params or MeasureParams()
    crop, offset = _crop(np.asarray(body_mask, dtype=bool))
    sp = geometry.spacing
    depth = ndimage.distance_transform_edt(crop, sampling=(sp[2], sp[1], sp[0]))
    voxel_mm3 = float(np.prod(sp))
    keep_vein = np.ones_like(crop)
    if exclude_vein:
        kji = np.argwhere(crop)
        pts = geometry.index_to_lps((kji + offset)[:, ::-1].astype(np.float64)) - frame.centre
        u, w = pts @ frame.ap, pts @ frame.lr
        u_frac = (u - u.min()) / max(float(u.max() - u.min()), 1e-6)
        half_w = max(float(np.abs(w).max()), 1e-6)
        vein = (u_frac < params.vein_posterior_fraction) & (
            np.abs(w) < params.vein_half_width_fraction * half_w
        )
        keep_vein[tuple(kji[vein].T)] = False
    margin = max(params.roi_margin_mm, params.roi_depth_fraction * float(depth.max(initial=0.0)))
    while True:
        roi = (depth > margin) & keep_vein
        if roi.sum() * voxel_mm3 >= params.roi_min_volume_mm3 or margin <= params.roi_min_margin_mm:
            return roi, offset, margin
        margin = max(params.roi_min_margin_mm, margin - 0.5)


def hu_stats(values: NDArray[Any], voxel_mm3: float) -> TrabecularHU | None:
    if values.size == 0:
        return None
    return TrabecularHU(
        mean=round(float(values.mean()), 1),
        median=round(float(np.median(values)), 1),
        sd=round(float(values.std()), 1),
        voxels=int(values.size),
        volume_mm3=round(float(values.size * voxel_mm3), 1),
    )


def roi_values(
    image: NDArray[Any], roi: NDArray[np.bool_], offset: NDArray[np.int64]
) -> NDArray[np.float32]:
    kji = np.argwhere(roi) + offset
    return np.asarray(image[kji[:, 0], kji[:, 1], kji[:, 2]], dtype=np.float32)


def measure_vertebra(
    image: NDArray[Any] | None,
    geometry: Geometry,
    vertebra_mask: NDArray[Any],
    body_mask: NDArray[Any] | None,
    *,
    si_hint: Vec | None = None,
    params: MeasureParams | None = None,
) -> VertebraMeasurement:
    """Centroid (whole vertebra), trabecular HU (when ``image`` given) and heights of one level."""
    params = params or MeasureParams()
    centroid = centroid_mm(vertebra_mask, geometry)
    cut = touches_border(vertebra_mask)
    if body_mask is None or not np.any(body_mask):
        return VertebraMeasurement(
            tuple(float(c) for c in centroid), None, None,  # type: ignore[arg-type]
            ("no vertebral body mask: density and heights not measured",), truncated=cut,
        )
    body_c = centroid_mm(body_mask, geometry)
    ap_hint: Vec | None = body_c - centroid
    if ap_hint is None or np.linalg.norm(ap_hint) < 2.0 or ap_hint @ ANTERIOR <= 0:
        ap_hint = None  # body mask == vertebra mask, or implausible: fall back to PCA/patient axes
    hm = measure_heights(body_mask, geometry, si_hint, ap_hint, params)
    notes = list(hm.notes)
    trab = None
    if image is not None:
        roi, offset, margin = trabecular_roi(body_mask, geometry, hm.frame, params)
        trab = hu_stats(roi_values(image, roi, offset), float(np.prod(geometry.spacing)))
        if trab is None:
            notes.append("trabecular ROI empty (body too small at this resolution)")
        elif margin < params.roi_margin_mm:
            notes.append(f"small body: ROI margin relaxed to {margin:g} mm")
    return VertebraMeasurement(
        tuple(float(c) for c in centroid), trab, hm, tuple(notes),  # type: ignore[arg-type]
        truncated=hm.truncated,  # the body decides (posterior elements may be cut harmlessly)
    )


def eroded_mean_hu(
    image: NDArray[Any], geometry: Geometry, body_mask: NDArray[Any], margin_mm: float
) -> float | None:
    """Mean HU of a body mask eroded by ``margin_mm`` (reference ROI for evaluation)."""
    crop, offset = _crop(np.asarray(body_mask, dtype=bool))
    sp = geometry.spacing
    depth = ndimage.distance_transform_edt(crop, sampling=(sp[2], sp[1], sp[0]))
    vals = roi_values(image, depth > margin_mm, offset)
    return float(vals.mean()) if vals.size else None
