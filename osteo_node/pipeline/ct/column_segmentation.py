"""Vertebrae of a CT, found along the spinal column: canal -> straightened column -> sagittal
network -> bodies between discs -> level names -> label maps on the input grid.

Steps (each its own module):

1. :mod:`.column`: the spinal canal tracked through the scan on a coarse axis-aligned grid
   (classical; nothing off this column can become a vertebra);
2. :mod:`.straighten`: the column resampled upright at 1.5 mm;
3. :mod:`.sagittal_net`: the 2D network on every sagittal plane (body, posterior elements,
   disc, sacrum);
4. :mod:`.column_instances` / :mod:`.disc_profile`: bodies between the discs (with a body-height
   prior), posterior elements grown from them, the sacrum;
5. :mod:`.ribs` and :mod:`.level_names`: rib-bearing vertebrae and the sacrum anchor the names;
6. the maps back on the input grid (linear interpolation of the probabilities, identity from the
   nearest instance).

A vertebra is reported only when its body lies in front of the tracked canal
(``MAX_BODY_U_MM``) and near the line of the others (``MAX_BODY_V_MM``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import structlog
from numpy.typing import NDArray
from scipy import ndimage

from osteo_node.models import OnnxModel
from osteo_node.pipeline.ct.column import WORKING_MM, SpinalCanal, track_canal
from osteo_node.pipeline.ct.column_instances import ColumnInstances, find_instances
from osteo_node.pipeline.ct.disc_profile import BodyRun
from osteo_node.pipeline.ct.fine_bodies import fine_body_masks, needs_fine_masks
from osteo_node.pipeline.ct.level_names import (
    VERSE_VALUES,
    BodyInstance,
    LevelAssignment,
    assign_levels,
    is_c2,
    last_rib_at_disc,
    merged_body_check,
    missing_between,
    positions,
    rib_flags,
)
from osteo_node.pipeline.ct.ribs import (
    HEAD_ABOVE_DISC_MM,
    RibEvidence,
    evidence_by_level,
    rib_heads,
)
from osteo_node.pipeline.ct.sagittal_net import column_probabilities
from osteo_node.pipeline.ct.stage_types import FineMask
from osteo_node.pipeline.ct.straighten import (
    StraightFrame,
    frame_for,
    sample,
    unstraighten_chunks,
)
from osteo_node.pipeline.ct.working_grid import crop_to_body, to_canonical_grid
from osteo_node.pipeline.results import ModelInfo
from osteo_node.pipeline.types import Geometry, LabelVolume, Volume

log = structlog.get_logger(__name__)

BODY, POSTERIOR, DISC, SACRUM = 1, 2, 3, 4
MAX_BODY_U_MM = -3.0  # a body's centre lies in front of the canal centre ...
MIN_BODY_U_MM = -75.0  # ... but not further than any vertebral body is deep
MAX_BODY_V_MM = 20.0
# geometry plausibility: the whole spine C1-S1 is about 700 mm in adults, lumbar bodies with
# their discs about 35-45 mm apart (Panjabi 1992); far beyond that the series geometry is wrong
MAX_COLUMN_MM = 1000.0
MAX_BODY_PERIOD_MM = 70.0


@dataclass
class ColumnSegmentation:
    """Labels on the input grid (VerSe values, whole vertebrae and bodies) and what was found."""

    labels: LabelVolume
    bodies: NDArray[np.uint8]
    model: ModelInfo
    canal: SpinalCanal | None = None
    frame: StraightFrame | None = None
    cut_endplates: frozenset[str] = frozenset()
    body_confidence: dict[str, float] = field(default_factory=dict)
    partial: frozenset[str] = frozenset()
    ribs: dict[str, RibEvidence] = field(default_factory=dict)
    anchor: str = "none"
    timings_s: dict[str, float] = field(default_factory=dict)
    fine_bodies: dict[str, FineMask] = field(default_factory=dict)
    body_span_mm: dict[str, float] = field(default_factory=dict)


def _empty(volume: Volume, model: ModelInfo, note: str, **kw: object) -> ColumnSegmentation:
    shape = volume.array.shape
    lab = LabelVolume(np.zeros(shape, dtype=np.uint8), volume.geometry, {}, {}, [note])
    return ColumnSegmentation(lab, np.zeros(shape, dtype=np.uint8), model, **kw)  # type: ignore[arg-type]


def _on_column(inst: ColumnInstances, frame: StraightFrame) -> list[int]:
    """Indices of the runs whose body centre lies in front of the canal and near the column's
    own line: within ``MAX_BODY_V_MM`` of the bodies' median side offset (with a rotated or
    scoliotic spine every body lies to the same side of the canal's left-right line)."""
    objs = ndimage.find_objects(inst.bodies)
    centres: dict[int, tuple[float, float]] = {}
    for i in range(len(inst.runs)):
        sl = objs[i] if i < len(objs) else None
        if sl is None:
            continue
        idx = np.argwhere(inst.bodies[sl] == i + 1).mean(axis=0)
        centres[i] = (float(frame.u_of(idx[1] + sl[1].start)),
                      float((idx[2] + sl[2].start - frame.nv // 2) * frame.step))
    if not centres:
        return []
    line = float(np.median([v for _, v in centres.values()]))
    return [i for i, (u, v) in centres.items()
            if MIN_BODY_U_MM <= u <= MAX_BODY_U_MM and abs(v - line) <= MAX_BODY_V_MM]


def _on_working_grid(maps: list[NDArray[np.int16]], frame: StraightFrame, geo: Geometry,
                     shape: tuple[int, ...]) -> list[NDArray[np.int16]]:
    """Straightened label maps looked up (nearest) at every voxel of the working grid."""
    nk, nj, ni = shape
    out = [np.zeros(shape, dtype=np.int16) for _ in maps]
    ii, jj = np.meshgrid(np.arange(ni, dtype=np.float64), np.arange(nj, dtype=np.float64))
    for k in range(nk):
        lps = geo.index_to_lps(np.stack([ii.ravel(), jj.ravel(), np.full(ii.size, float(k))], 1))
        idx = np.rint(frame.index_of(lps)).astype(np.int64)
        ok = ((idx[:, 0] >= 0) & (idx[:, 0] < frame.nz) & (idx[:, 1] >= 0)
              & (idx[:, 1] < frame.nu) & (idx[:, 2] >= 0) & (idx[:, 2] < frame.nv))
        if not ok.any():
            continue
        for src, dst in zip(maps, out, strict=True):
            vals = np.zeros(ii.size, dtype=np.int16)
            vals[ok] = src[idx[ok, 0], idx[ok, 1], idx[ok, 2]]
            dst[k] = vals.reshape(nj, ni)
    return out


def _body_instances(inst: ColumnInstances, frame: StraightFrame) -> list[BodyInstance]:
    """The runs as level_names' BodyInstance records, cranial -> caudal (rows of the frame)."""
    out = []
    objs = ndimage.find_objects(inst.bodies)
    voxel_ml = frame.step**3 / 1000.0
    for i, run in enumerate(inst.runs):
        sl = objs[i]
        assert sl is not None
        m = inst.bodies[sl] == i + 1
        c = np.argwhere(m).mean(axis=0) + [s.start for s in sl]
        below = run.lower is None and run.lo <= 1 and frame.scan_edge_below
        above = run.upper is None and run.hi >= frame.nz - 2 and frame.scan_edge_above
        out.append(BodyInstance(label=i + 1, centroid_kji=(float(c[0]), float(c[1]),
                                                           float(c[2])),
                                k_range=(run.lo, run.hi), volume_ml=float(m.sum()) * voxel_ml,
                                touches_fov=bool(below or above),
                                cut_endplate=run.blind_lower or run.blind_upper,
                                cut_cranially=bool(above)))
    return out[::-1]


def _expand(labels: NDArray[np.int16], steps: int = 2) -> NDArray[np.int16]:
    out = labels.copy()
    for _ in range(steps):
        grown = ndimage.grey_dilation(out, size=(3, 3, 3))
        out = np.where(out == 0, grown, out)
    return out


def _bone_probability(probs: NDArray[np.float32]) -> NDArray[np.float32]:
    """P(body) + P(posterior elements) + P(sacrum): a voxel of some vertebra at >= 0.5."""
    return np.asarray(probs[BODY] + probs[POSTERIOR] + probs[SACRUM])


def to_input_grid(probs: NDArray[np.float32], vertebrae: NDArray[np.int16],
                  bodies: NDArray[np.int16], frame: StraightFrame, volume: Volume,
                  values: NDArray[np.uint8]) -> tuple[NDArray[np.uint8], NDArray[np.uint8]]:
    """Whole-vertebra and body maps on the input grid (``values[label]`` = VerSe value).

    vertebra = P(body) + P(posterior) + P(sacrum) >= 0.5 or body; body = the straightened body
    map (closed and filled, see ``column_instances``) linearly interpolated >= 0.5; identity
    from the nearest instance (expanded by two cells)."""
    p_vert = _bone_probability(probs)
    in_body = (bodies > 0).astype(np.float32)
    labels = np.zeros(volume.array.shape, dtype=np.uint8)
    body_map = np.zeros(volume.array.shape, dtype=np.uint8)
    for box, (pv, pb, vi, bi) in unstraighten_chunks(
            [(p_vert, 1), (in_body, 1), (_expand(vertebrae), 0), (_expand(bodies), 0)],
            frame, volume.geometry, volume.array.shape):
        body = (pb >= 0.5) & (bi > 0)
        vert = ((pv >= 0.5) & (vi > 0)) | body
        labels[box] = np.where(body, values[bi], np.where(vert, values[vi], 0))
        body_map[box] = np.where(body, values[bi], 0)
    return labels, body_map


def _sacrum_below(inst: ColumnInstances, frame: StraightFrame) -> bool:
    """The sacrum (see column_instances) lies directly below the lowest body, its L5/S1 disc in
    between. It anchors the names only if that body bears no rib (L5 never does)."""
    if inst.sacrum is None or not inst.runs:
        return False
    top = int(np.flatnonzero(inst.sacrum.any(axis=(1, 2))).max())
    return inst.runs[0].lo - top <= round(25.0 / frame.step)


def _rib_evidence(inst: ColumnInstances, frame: StraightFrame, hu_w: NDArray[np.float32],
                  geo_w: Geometry) -> tuple[dict[int, RibEvidence], bool]:
    """Rib heads per body label, found on the working grid; whether ribs are in view."""
    sac = inst.sacrum.astype(np.int16) if inst.sacrum is not None and \
        _sacrum_below(inst, frame) else np.zeros(inst.vertebrae.shape, dtype=np.int16)
    vmap_w, sac_w = _on_working_grid([inst.vertebrae, sac], frame, geo_w, hu_w.shape)
    z_w = geo_w.origin[2] + np.arange(hu_w.shape[0], dtype=np.float64) * geo_w.spacing[2]
    x, y = frame.canal.at(z_w)
    idx = geo_w.lps_to_index(np.stack([x, y, z_w], axis=1))
    heads, in_view = rib_heads(hu_w, vmap_w, sac_w > 0 if sac_w.any() else None,
                               idx[:, [1, 0]], WORKING_MM)

    def k_of(row: float) -> float:
        return (float(frame.z_of(row)) - geo_w.origin[2]) / geo_w.spacing[2]

    extra = HEAD_ABOVE_DISC_MM / frame.step
    intervals = {i + 1: (k_of(r.lower.z0) if r.lower is not None else -np.inf,
                         k_of((r.upper.z0 if r.upper is not None else r.hi) + extra))
                 for i, r in enumerate(inst.runs)}
    return evidence_by_level(heads, intervals), in_view


def _names(inst: ColumnInstances, frame: StraightFrame, hu_w: NDArray[np.float32],
           geo_w: Geometry) -> tuple[LevelAssignment, list[BodyInstance],
                                     dict[int, RibEvidence], bool]:
    """Level names, the bodies (cranial -> caudal), rib evidence, and whether the sacrum
    anchors the names."""
    ribs, ribs_in_view = _rib_evidence(inst, frame, hu_w, geo_w)
    sacrum = _sacrum_below(inst, frame) and not ribs.get(1, RibEvidence(0, 0)).bears_ribs
    bodies = _body_instances(inst, frame)
    flags = rib_flags(bodies, {label: ev.bears_ribs for label, ev in ribs.items()})
    along = [-b.centroid_kji[0] * frame.step for b in bodies]
    missing = missing_between(along)
    flags, rib_note = last_rib_at_disc(
        flags, [ribs.get(b.label, RibEvidence(0, 0)).only_at_disc_above for b in bodies],
        sacrum, positions(missing))
    space_above = frame.scan_z[1] - float(frame.z_of(inst.column_top))
    c2 = is_c2(bodies, space_above, frame.step)
    assignment = assign_levels(flags, sacrum, missing, c2_on_top=c2,
                               ribs_in_view=ribs_in_view)
    if rib_note is not None:
        assignment.notes.append(rib_note)
    if any(missing):
        assignment.notes.append(
            f"{sum(missing)} vertebra(e) apparently not found (gap in the column); levels "
            "counted across the gap by spacing, lower confidence")
    return merged_body_check(bodies, assignment, frame.step), bodies, ribs, sacrum


@dataclass
class _Named:
    """What the names give: label value -> VerSe value, and per level its properties."""

    values: NDArray[np.uint8]
    levels: dict[str, int] = field(default_factory=dict)
    confidence: dict[str, float] = field(default_factory=dict)
    body_conf: dict[str, float] = field(default_factory=dict)
    cut: set[str] = field(default_factory=set)
    partial: set[str] = field(default_factory=set)
    ribs: dict[str, RibEvidence] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    span_mm: dict[str, float] = field(default_factory=dict)


def _span_mm(run: BodyRun, step_mm: float) -> float | None:
    """Distance between the two disc planes around a body on the column axis (None when one
    of them is missing: an end of the column)."""
    if run.lower is None or run.upper is None:
        return None
    return (run.upper.z0 - run.lower.z0) * step_mm


def _named(inst: ColumnInstances, bodies: list[BodyInstance], assignment: LevelAssignment,
           ribs: dict[int, RibEvidence], step_mm: float) -> _Named:
    out = _Named(np.zeros(len(inst.runs) + 1, dtype=np.uint8), notes=list(assignment.notes))
    for body, name, conf in zip(bodies, assignment.names, assignment.confidence, strict=True):
        if name is None or name in out.levels:
            continue
        out.values[body.label] = VERSE_VALUES[name]
        out.levels[name] = VERSE_VALUES[name]
        out.confidence[name] = round(conf * (0.9 if body.touches_fov else 1.0), 3)
        out.body_conf[name] = round(inst.body_probability[body.label - 1], 3)
        out.ribs[name] = ribs.get(body.label, RibEvidence(0, 0))
        span = _span_mm(inst.runs[body.label - 1], step_mm)
        if span is not None:
            out.span_mm[name] = round(span, 2)
        if body.cut_endplate:
            out.cut.add(name)
        if body.touches_fov:
            out.partial.add(name)
            out.notes.append(f"{name} is cut by the field of view (partial vertebra)")
    return out


def _add_sacrum(vert_in: NDArray[np.uint8], probs: NDArray[np.float32],
                sacrum: NDArray[np.bool_], frame: StraightFrame, volume: Volume) -> None:
    """The sacrum as S1 where no vertebra is, written slab by slab into ``vert_in`` (no
    full-size temporaries: a 512 x 512 x 800 series peaked at 2.1 GB with them)."""
    p_vert = _bone_probability(probs)
    for box, (pv, si) in unstraighten_chunks(
            [(p_vert, 1), (_expand(sacrum.astype(np.int16)), 0)], frame, volume.geometry,
            volume.array.shape):
        view = vert_in[box]
        view[(pv >= 0.5) & (si > 0) & (view == 0)] = VERSE_VALUES["S1"]


def _maps(probs: NDArray[np.float32], inst: ColumnInstances, frame: StraightFrame,
          volume: Volume, named: _Named, sacrum: bool
          ) -> tuple[NDArray[np.uint8], NDArray[np.uint8]]:
    """Vertebra and body maps on the input grid, the sacrum added as S1; names whose voxels
    did not survive are dropped from ``named``."""
    vert_in, body_in = to_input_grid(probs, inst.vertebrae, inst.bodies, frame, volume,
                                     named.values)
    if inst.sacrum is not None and sacrum:
        _add_sacrum(vert_in, probs, inst.sacrum, frame, volume)
        named.levels["S1"] = VERSE_VALUES["S1"]
        named.confidence["S1"] = 0.9
    present = {int(v) for v in np.unique(vert_in)}
    for name in [n for n, v in named.levels.items() if v not in present]:
        named.levels.pop(name)
        named.confidence.pop(name, None)
        named.body_conf.pop(name, None)
    return vert_in, body_in


def segment_column(volume: Volume, model: OnnxModel) -> ColumnSegmentation:
    """Find, separate and name the vertebrae of ``volume`` (see the module docstring)."""
    t = [time.perf_counter()]
    hu_w, geo_w = crop_to_body(*to_canonical_grid(volume, WORKING_MM))
    canal = track_canal(hu_w, geo_w)
    t.append(time.perf_counter())
    if canal is None:
        return _empty(volume, model.info, "no spinal canal found in the field of view")
    if canal.length_mm > MAX_COLUMN_MM:
        return _empty(volume, model.info,
                      f"the spinal column would be {canal.length_mm:.0f} mm long, longer than "
                      f"any human spine (> {MAX_COLUMN_MM:.0f} mm): slice positions or spacing "
                      "of the series are implausible", canal=canal)
    frame = frame_for(canal, volume)
    image = sample(volume, frame)
    t.append(time.perf_counter())
    probs = column_probabilities(model, image, frame.step)
    t.append(time.perf_counter())
    inst = find_instances(probs, frame, image)
    if inst is None or not inst.runs:
        return _empty(volume, model.info, "no vertebral body found along the spinal canal",
                      canal=canal, frame=frame)
    tall = [r.rows * frame.step for r in inst.runs if r.lower is not None and r.upper is not None]
    if tall and float(np.median(tall)) > MAX_BODY_PERIOD_MM:
        return _empty(volume, model.info,
                      f"vertebrae {float(np.median(tall)):.0f} mm apart (median), more than any "
                      f"human spine (> {MAX_BODY_PERIOD_MM:.0f} mm): slice positions or spacing "
                      "of the series are implausible", canal=canal, frame=frame)
    inst = _subset(inst, _on_column(inst, frame))
    assignment, bodies, ribs, sacrum = _names(inst, frame, hu_w, geo_w)
    named = _named(inst, bodies, assignment, ribs, frame.step)
    t.append(time.perf_counter())
    vert_in, body_in = _maps(probs, inst, frame, volume, named, sacrum)
    fine: dict[str, FineMask] = {}
    if needs_fine_masks(volume.geometry):
        by_value = {int(v): label for label, v in enumerate(named.values) if v}
        fine = fine_body_masks(inst.bodies, frame, volume, body_in, {
            name: (by_value[v], v) for name, v in named.levels.items() if v in by_value})
    t.append(time.perf_counter())
    log.info("vertebrae.labelled", levels=list(named.levels), anchor=assignment.anchor,
             ribs={k: v.left + v.right for k, v in named.ribs.items()}, sacrum=sacrum,
             provider=model.provider)
    timings = {"canal": t[1] - t[0], "straighten": t[2] - t[1], "inference": t[3] - t[2],
               "instances": t[4] - t[3], "to_input_grid_and_fine_bodies": t[5] - t[4]}
    lab = LabelVolume(vert_in, volume.geometry, named.levels, named.confidence, named.notes)
    kept = set(named.levels)
    return ColumnSegmentation(lab, body_in, model.info, canal=canal, frame=frame,
                              cut_endplates=frozenset(named.cut & kept),
                              body_confidence=named.body_conf,
                              partial=frozenset(named.partial & kept), ribs=named.ribs,
                              anchor=assignment.anchor, timings_s=timings,
                              fine_bodies=fine, body_span_mm=named.span_mm)


def _subset(inst: ColumnInstances, keep: list[int]) -> ColumnInstances:
    if len(keep) == len(inst.runs):
        return inst
    lut = np.zeros(len(inst.runs) + 1, dtype=np.int16)
    for new, old in enumerate(keep, start=1):
        lut[old + 1] = new
    return ColumnInstances(runs=[inst.runs[i] for i in keep], bodies=lut[inst.bodies],
                           vertebrae=lut[inst.vertebrae], sacrum=inst.sacrum,
                           body_probability=[inst.body_probability[i] for i in keep],
                           column_top=inst.column_top)
