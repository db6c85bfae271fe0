"""Vertebra instances and anatomical level names for a CT volume.

Interface (what the CT analyser uses)::

    seg = segment_vertebrae(volume, model)          # model = osteo_node.models.load_model(...)
    seg.labels   # LabelVolume on the INPUT grid: whole vertebrae (body + posterior elements),
                 #   values in VerSe numbering (VERSE_VALUES: C1-C7 1-7, T1-T12 8-19, L1-L6 20-25,
                 #   sacrum 26 named "S1"); .levels {"L1": 20, ...}; .confidence {"L1": 0.95, ...};
                 #   .notes (anchors used, transitional anatomy, partial vertebrae)
    seg.bodies   # LabelVolume, same grid/levels/values: vertebral BODY voxels only
    seg.model    # ModelInfo (name, version, sha256, execution provider really used)

Level naming is anatomical, not learnt (``level_names.py``): the network only knows body /
posterior elements / disc / sacrum. Anchors: the sacrum (the body directly above it is L5) and the
last rib-bearing vertebra (T12; see ribs.py), counting up/down from them; the first rib-bearing
vertebra below a rib-free one (T1) when neither is in view. When the sacrum and the last rib
disagree (not 5 lumbar-type vertebrae in between: transitional anatomy or a missed rib) the names
follow the last rib and the confidence drops with a note. Without any anchor the names are a
labelled guess with a low confidence. This module: instances and rib evidence on the network's
grid, the names from ``level_names``, and the label maps back on the input grid.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk
import structlog
from numpy.typing import NDArray
from scipy import ndimage

from osteo_node.models import OnnxModel
from osteo_node.pipeline.ct.instances import Instances, separate
from osteo_node.pipeline.ct.level_names import (
    VERSE_VALUES,
    LevelAssignment,
    assign_levels,
    merged_body_check,
    missing_between,
    rib_flags,
)
from osteo_node.pipeline.ct.ribs import RibEvidence, rib_evidence
from osteo_node.pipeline.results import ModelInfo
from osteo_node.pipeline.sitk_io import grid_image, to_sitk
from osteo_node.pipeline.stages.segment import ModelGridSegmentation, run_model
from osteo_node.pipeline.types import Geometry, LabelVolume, Volume

log = structlog.get_logger(__name__)

CHUNK_SLICES = 64


@dataclass
class VertebraSegmentation:
    """Result of :func:`segment_vertebrae` (see the module docstring)."""

    labels: LabelVolume
    bodies: LabelVolume
    model: ModelInfo
    ribs: dict[str, RibEvidence] = field(default_factory=dict)
    anchor: str = "none"
    timings_s: dict[str, float] = field(default_factory=dict)
    # levels whose body was separated from a neighbour by a cut (no disc seen by the network):
    # an endplate there is an axial plane of the coarse grid, so heights are not measurable
    cut_endplates: frozenset[str] = frozenset()
    # per level: mean network probability of the body class over its body (3 mm grid)
    body_confidence: dict[str, float] = field(default_factory=dict)
    # levels whose body is cut by the field of view (top/bottom slice of the model grid, or the
    # one next to it): partial vertebrae
    partial: frozenset[str] = frozenset()


def _canonical_maps(inst: Instances, assignment: LevelAssignment
                    ) -> tuple[NDArray[np.uint8], NDArray[np.uint8], dict[str, int]]:
    lut = np.zeros(max((b.label for b in inst.bodies), default=0) + 1, dtype=np.uint8)
    levels: dict[str, int] = {}
    for body, name in zip(inst.bodies, assignment.names, strict=True):
        if name is not None and name not in levels:
            lut[body.label] = VERSE_VALUES[name]
            levels[name] = VERSE_VALUES[name]
    vert = lut[inst.vertebra_map]
    bodies = lut[inst.body_map]
    if inst.sacrum is not None:
        vert[inst.sacrum & (vert == 0)] = VERSE_VALUES["S1"]
        levels["S1"] = VERSE_VALUES["S1"]
    return vert, bodies, levels


def _input_box(
    mask: NDArray[np.bool_], mg_geo: Geometry, in_geo: Geometry, in_shape: tuple[int, ...]
) -> tuple[slice, slice, slice] | None:
    objs = ndimage.find_objects(mask.astype(np.uint8))
    if not objs or objs[0] is None:
        return None
    sl = objs[0]
    corners = np.array([[i, j, k] for i in (sl[2].start - 1, sl[2].stop)
                        for j in (sl[1].start - 1, sl[1].stop)
                        for k in (sl[0].start - 1, sl[0].stop)], dtype=np.float64)
    idx = in_geo.lps_to_index(mg_geo.index_to_lps(corners))
    lo = np.floor(idx.min(axis=0)).astype(int) - 1
    hi = np.ceil(idx.max(axis=0)).astype(int) + 2
    ni, nj, nk = in_shape[2], in_shape[1], in_shape[0]
    i0, j0, k0 = max(0, lo[0]), max(0, lo[1]), max(0, lo[2])
    i1, j1, k1 = min(ni, hi[0]), min(nj, hi[1]), min(nk, hi[2])
    if i0 >= i1 or j0 >= j1 or k0 >= k1:
        return None
    return slice(int(k0), int(k1)), slice(int(j0), int(j1)), slice(int(i0), int(i1))


def to_input_grid(
    mg: ModelGridSegmentation,
    vert: NDArray[np.uint8],
    in_geo: Geometry,
    in_shape: tuple[int, int, int],
) -> tuple[NDArray[np.uint8], NDArray[np.uint8]]:
    """Whole-vertebra and body label maps on the input grid.

    Boundaries come from linearly interpolated probabilities (smooth at fine input spacing):
    vertebra = P(body) + P(posterior) + P(sacrum) >= 0.5, body = vertebra voxels where P(body)
    is at least half of that. The vertebra identity comes from the nearest coarse instance label
    (expanded by two voxels so that every fine boundary voxel finds one). Done in slabs.
    """
    labels = np.zeros(in_shape, dtype=np.uint8)
    bodies = np.zeros(in_shape, dtype=np.uint8)
    expanded = vert.copy()
    for _ in range(2):
        grown = ndimage.grey_dilation(expanded, size=(3, 3, 3))
        expanded = np.where(expanded == 0, grown, expanded)
    box = _input_box(expanded > 0, mg.geometry, in_geo, in_shape)
    if box is None:
        return labels, bodies
    body_p = mg.probs[mg.channel("vertebral_body")]
    vert_p = body_p + mg.probs[mg.channel("posterior_elements")] + mg.probs[mg.channel("sacrum")]
    probs_img = to_sitk(np.stack([vert_p, body_p], axis=-1), mg.geometry, vector=True)
    inst_img = to_sitk(expanded, mg.geometry)
    ks, js, is_ = box
    for k0 in range(ks.start, ks.stop, CHUNK_SLICES):
        k1 = min(ks.stop, k0 + CHUNK_SLICES)
        o = in_geo.index_to_lps(np.array([is_.start, js.start, k0], dtype=np.float64))
        chunk = Geometry((float(o[0]), float(o[1]), float(o[2])), in_geo.spacing, in_geo.direction)
        ref = grid_image(chunk, (k1 - k0, js.stop - js.start, is_.stop - is_.start))
        p = sitk.GetArrayFromImage(sitk.Resample(probs_img, ref, sitk.Transform(),
                                                 sitk.sitkLinear, 0.0))
        inst = sitk.GetArrayFromImage(sitk.Resample(inst_img, ref, sitk.Transform(),
                                                    sitk.sitkNearestNeighbor, 0))
        bone = p[..., 0] >= 0.5
        body = bone & (p[..., 1] >= 0.5 * p[..., 0])  # body outweighs the rest of the bone
        sub = (slice(k0, k1), js, is_)
        labels[sub] = np.where(bone, inst, 0)
        bodies[sub] = np.where(body, inst, 0)
    bodies[bodies == VERSE_VALUES["S1"]] = 0
    return labels, bodies


@dataclass
class ModelGridLabels:
    """Vertebra instances and their level names on the network's canonical grid."""

    instances: Instances
    ribs: dict[int, RibEvidence]
    assignment: LevelAssignment
    vertebrae: NDArray[np.uint8]  # whole vertebrae, VerSe values
    bodies: NDArray[np.uint8]  # bodies only, VerSe values
    levels: dict[str, int]


def label_model_grid(mg: ModelGridSegmentation) -> ModelGridLabels:
    """Separate the network's classes into vertebrae and name them (canonical grid)."""
    spacing = float(mg.geometry.spacing[0])
    classes = mg.classes
    inst = separate(
        classes, mg.hu, mg.probs[mg.channel("intervertebral_disc")], spacing,
        body_value=mg.channel("vertebral_body"), posterior_value=mg.channel("posterior_elements"),
        sacrum_value=mg.channel("sacrum"),
    )
    cents = np.array([b.centroid_kji for b in inst.bodies], dtype=np.float64).reshape(-1, 3)
    ribs = rib_evidence(mg.hu, inst.vertebra_map, inst.sacrum, cents, spacing)
    flags = rib_flags(inst.bodies, ribs, classes.shape[0])
    along = [b.centroid_kji[0] * spacing for b in inst.bodies]
    missing = missing_between(along)
    assignment = assign_levels(flags, inst.sacrum is not None, missing)
    if any(missing):
        assignment.notes.append(
            f"{sum(missing)} vertebra(e) apparently not segmented (gap in the column); levels "
            "counted across the gap by spacing, lower confidence"
        )
    assignment = merged_body_check(inst.bodies, assignment, spacing)
    vert, bodies, levels = _canonical_maps(inst, assignment)
    return ModelGridLabels(instances=inst, ribs=ribs, assignment=assignment, vertebrae=vert,
                           bodies=bodies, levels=levels)


def segment_vertebrae(volume: Volume, model: OnnxModel) -> VertebraSegmentation:
    """Run the network, separate and name the vertebrae, return label maps on the input grid."""
    t0 = time.perf_counter()
    mg = run_model(volume, model)
    t1 = time.perf_counter()
    grid = label_model_grid(mg)
    inst, ribs, assignment = grid.instances, grid.ribs, grid.assignment
    vert, levels = grid.vertebrae, dict(grid.levels)
    t2 = time.perf_counter()
    labels_arr, bodies_arr = to_input_grid(mg, vert, volume.geometry, volume.array.shape)
    t3 = time.perf_counter()

    confidence: dict[str, float] = {}
    cut_names: set[str] = set()
    partial_names: set[str] = set()
    notes = list(assignment.notes)
    rib_by_name: dict[str, RibEvidence] = {}
    for body, name, conf in zip(inst.bodies, assignment.names, assignment.confidence,
                                strict=True):
        if name is None or name in confidence:
            continue
        confidence[name] = round(conf * (0.9 if body.touches_fov else 1.0), 3)
        if body.cut_endplate:
            cut_names.add(name)
        rib_by_name[name] = ribs.get(body.label, RibEvidence(0, 0))
        if body.touches_fov:
            partial_names.add(name)
            notes.append(f"{name} is cut by the field of view (partial vertebra)")
    if "S1" in levels:
        confidence["S1"] = 0.9
    present = {int(v) for v in np.unique(labels_arr)}
    for name in [n for n, v in levels.items() if v not in present]:
        levels.pop(name)
        confidence.pop(name, None)
    log.info("vertebrae.labelled", levels=list(levels), anchor=assignment.anchor,
             provider=model.provider)
    timings = {**mg.timings_s, "labelling": t2 - t1, "to_input_grid": t3 - t2,
               "segment_total": t3 - t0}
    lab = LabelVolume(array=labels_arr, geometry=volume.geometry, levels=dict(levels),
                      confidence=dict(confidence), notes=notes)
    bod = LabelVolume(array=bodies_arr, geometry=volume.geometry,
                      levels={k: v for k, v in levels.items() if k != "S1"},
                      confidence={k: v for k, v in confidence.items() if k != "S1"},
                      notes=list(notes))
    named = {name: value for name, value in levels.items() if name != "S1"}
    present_bodies = set(np.unique(grid.bodies).tolist())
    named = {name: value for name, value in named.items() if value in present_bodies}
    means = ndimage.mean(mg.probs[mg.channel("vertebral_body")], labels=grid.bodies,
                         index=list(named.values())) if named else []
    body_conf = {name: round(float(m), 3) for name, m in zip(named, means, strict=True)}
    return VertebraSegmentation(labels=lab, bodies=bod, model=model.info, ribs=rib_by_name,
                                anchor=assignment.anchor, timings_s=timings,
                                cut_endplates=frozenset(cut_names & set(levels)),
                                body_confidence=body_conf,
                                partial=frozenset(partial_names & set(levels)))
