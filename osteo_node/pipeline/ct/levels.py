"""Vertebra instances and anatomical level names for a CT volume.

Interface (what the CT analyser uses)::

    seg = segment_vertebrae(volume, model)          # model = osteo_node.models.load_model(...)
    seg.labels   # LabelVolume on the INPUT grid: whole vertebrae (body + posterior elements),
                 #   values in VerSe numbering (VERSE_VALUES: C1-C7 1-7, T1-T12 8-19, L1-L6 20-25,
                 #   sacrum 26 named "S1"); .levels {"L1": 20, ...}; .confidence {"L1": 0.95, ...};
                 #   .notes (anchors used, transitional anatomy, partial vertebrae)
    seg.bodies   # LabelVolume, same grid/levels/values: vertebral BODY voxels only
    seg.model    # ModelInfo (name, version, sha256, execution provider really used)

Level naming is anatomical, not learnt: the network only knows body / posterior elements / disc /
sacrum. Anchors: the sacrum (the body directly above it is L5) and the last rib-bearing vertebra
(T12; see ribs.py), counting up/down from them; the first rib-bearing vertebra below a rib-free
one (T1) when neither is in view. When the sacrum and the last rib disagree (not 5 lumbar-type
vertebrae in between: transitional anatomy or a missed rib) the names follow the last rib and
the confidence drops with a note. Without any anchor the names are a labelled guess with a low
confidence.
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
from osteo_node.pipeline.ct.instances import BodyInstance, Instances, separate
from osteo_node.pipeline.ct.ribs import RibEvidence, rib_evidence
from osteo_node.pipeline.results import ModelInfo
from osteo_node.pipeline.sitk_io import grid_image, to_sitk
from osteo_node.pipeline.stages.segment import ModelGridSegmentation, run_model
from osteo_node.pipeline.types import Geometry, LabelVolume, Volume

log = structlog.get_logger(__name__)

# VerSe label numbering (also used by the TPTBox references): stable values for the label map.
VERTEBRA_NAMES: tuple[str, ...] = (
    *(f"C{i}" for i in range(1, 8)),
    *(f"T{i}" for i in range(1, 13)),
    *(f"L{i}" for i in range(1, 7)),
)
VERSE_VALUES: dict[str, int] = {name: i for i, name in enumerate(VERTEBRA_NAMES, start=1)}
VERSE_VALUES["S1"] = 26  # the sacrum (its S1 part, as the model's sacrum class)
_SPINE = tuple(n for n in VERTEBRA_NAMES if n != "L6")  # normal count: C1..L5

CONF_AGREE = 0.95
CONF_RIB_ONLY = 0.85
CONF_SACRUM_ONLY = 0.8
CONF_T1_ONLY = 0.75
CONF_TRANSITIONAL = 0.5
CONF_GUESS_RIBS = 0.25
CONF_GUESS_NONE = 0.15
CONF_STEP = 0.015  # counting away from the anchor accumulates risk
CONF_FLOOR = 0.2
CONF_GAP_FACTOR = 0.8
GAP_FACTOR = 1.6  # a gap this many times the neighbouring spacing holds a missed vertebra
# vertebral bodies grow from T1 to L4 (Panjabi MM et al. Spine 1991;16:888-901 and Spine
# 1992;17:299-306: thoracic and lumbar body heights increase caudally); a body this much
# taller than the bodies just below it probably holds two vertebrae that were not separated
MERGED_HEIGHT_FACTOR = 1.2
CHUNK_SLICES = 64


@dataclass(frozen=True)
class LevelAssignment:
    names: list[str | None]  # per body, cranial -> caudal; None = cannot be named
    confidence: list[float]
    notes: list[str]
    anchor: str  # "sacrum+rib", "rib", "sacrum", "t1", "none"


def _from_anchor(pos: list[int], anchor_idx: int, anchor_name: str, base: float,
                 lumbar: int = 5) -> tuple[list[str | None], list[float]]:
    """Names by counting from the anchor; ``pos`` = position of each body along the spine
    (consecutive unless vertebrae were missed in between)."""
    seq = [*_SPINE[: _SPINE.index("L1")], *(f"L{i}" for i in range(1, lumbar + 1))]
    pos0 = seq.index(anchor_name) - pos[anchor_idx]
    names: list[str | None] = []
    conf: list[float] = []
    for i, q in enumerate(pos):
        p = pos0 + q
        names.append(seq[p] if 0 <= p < len(seq) else None)
        c = base - CONF_STEP * abs(q - pos[anchor_idx])
        if abs(q - pos[anchor_idx]) != abs(i - anchor_idx):
            c *= CONF_GAP_FACTOR  # counted across a gap (missed vertebra)
        conf.append(max(CONF_FLOOR, c) if base > CONF_FLOOR else base)
    return names, conf


def missing_between(centroids_mm: list[float]) -> list[int]:
    """Vertebrae probably missed between consecutive bodies (cranial -> caudal positions along
    the spine, mm): a gap of k typical spacings holds k - 1 missed vertebrae."""
    n = len(centroids_mm)
    out = [0] * n
    if n < 3:
        return out
    gaps = [abs(centroids_mm[i] - centroids_mm[i - 1]) for i in range(1, n)]
    for i in range(1, n):
        near = gaps[max(0, i - 4) : i - 1] + gaps[i : i + 3]  # neighbouring gaps, not this one
        if not near:
            continue
        typical = float(np.median(near))
        if typical > 0 and gaps[i - 1] > GAP_FACTOR * typical:
            out[i] = max(0, round(gaps[i - 1] / typical) - 1)
    return out


def assign_levels(ribs: list[bool | None], sacrum: bool, missing: list[int] | None = None
                  ) -> LevelAssignment:
    """Names for bodies ordered cranial -> caudal from rib flags and sacrum presence.

    ``ribs[i]``: True rib-bearing, False rib-free, None not known (see ``rib_flags``): an anchor
    needs a rib-free vertebra that is known to be rib-free next to the rib-bearing one.
    ``missing[i]``: vertebrae missed between body i-1 and body i (see missing_between).
    """
    n = len(ribs)
    if n == 0:
        return LevelAssignment([], [], ["no vertebral body found"], "none")
    missing = missing or [0] * n
    pos = [i + sum(missing[: i + 1]) for i in range(n)]
    rib_idx = [i for i, r in enumerate(ribs) if r]
    last_rib = rib_idx[-1] if rib_idx else None
    first_rib = rib_idx[0] if rib_idx else None
    t12 = last_rib if last_rib is not None and last_rib < n - 1 and ribs[last_rib + 1] is False \
        else None
    t1 = first_rib if first_rib is not None and first_rib > 0 and ribs[first_rib - 1] is False \
        else None
    notes: list[str] = []
    if t12 is not None and sacrum:
        lumbar = pos[n - 1] - pos[t12]
        if lumbar == 5:
            names, conf = _from_anchor(pos, t12, "T12", CONF_AGREE)
            notes.append("levels from the sacrum and the last rib-bearing vertebra (agree)")
            return LevelAssignment(names, conf, notes, "sacrum+rib")
        names, conf = _from_anchor(pos, t12, "T12", CONF_TRANSITIONAL, lumbar=min(lumbar, 6))
        notes.append(
            f"transitional anatomy suspected: {lumbar} rib-free vertebrae between the last "
            "rib-bearing vertebra and the sacrum (expected 5); levels counted from the last rib "
            "(T12), uncertain"
        )
        return LevelAssignment(names, conf, notes, "sacrum+rib")
    if t12 is not None:
        names, conf = _from_anchor(pos, t12, "T12", CONF_RIB_ONLY)
        notes.append("levels counted from the last rib-bearing vertebra (T12); sacrum not in view")
        if t1 is not None and pos[t12] - pos[t1] != 11:
            conf = [min(c, CONF_TRANSITIONAL) for c in conf]
            notes.append(f"{pos[t12] - pos[t1] + 1} rib-bearing vertebrae between the first and "
                         "the last rib (expected 12): a rib was missed or transitional anatomy; "
                         "uncertain")
        return LevelAssignment(names, conf, notes, "rib")
    if sacrum:
        names, conf = _from_anchor(pos, n - 1, "L5", CONF_SACRUM_ONLY)
        notes.append("levels counted up from the sacrum (L5 above it), assuming 5 lumbar vertebrae")
        if "T12" in names:
            t12_idx = names.index("T12")
            if ribs[t12_idx] is False:
                conf = [min(c, CONF_TRANSITIONAL) for c in conf]
                notes.append("no rib found at the vertebra counted as T12: rib detection missed "
                             "it or transitional anatomy; uncertain")
        return LevelAssignment(names, conf, notes, "sacrum")
    if t1 is not None:
        names, conf = _from_anchor(pos, t1, "T1", CONF_T1_ONLY)
        notes.append("levels counted down from the first rib-bearing vertebra (T1)")
        return LevelAssignment(names, conf, notes, "t1")
    if last_rib is not None:
        names, conf = _from_anchor(pos, last_rib, "T12", CONF_GUESS_RIBS)
        notes.append("no anatomical anchor in view (neither sacrum nor the last rib-bearing "
                     "vertebra nor T1): the lowest rib-bearing vertebra was assumed to be T12; "
                     "levels are a guess")
        return LevelAssignment(names, conf, notes, "none")
    names, conf = _from_anchor(pos, 0, "L1", CONF_GUESS_NONE)
    notes.append("no anatomical anchor in view and no ribs: vertebrae assumed lumbar from L1 "
                 "downwards; levels are a guess")
    return LevelAssignment(names, conf, notes, "none")


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


def _merged_body_check(bodies: list[BodyInstance], assignment: LevelAssignment, spacing: float
                       ) -> LevelAssignment:
    """Names counted across a body that is taller than the bodies below it are uncertain.

    Bodies are cranial -> caudal. A complete body more than MERGED_HEIGHT_FACTOR times the median
    height of the (up to three) complete bodies below it probably holds two vertebrae, so every
    name counted across it from a caudal anchor (sacrum, last rib) may be one level off: that
    body and all above it are capped at the transitional confidence, with a note. (With a T1
    anchor the names below such a body would be affected; that case is left as is: a merged
    body below T1 is rarer than one between T4 and T9, where thoracic discs are thin.)
    """
    if assignment.anchor not in ("sacrum+rib", "rib", "sacrum"):
        return assignment
    heights = [(b.k_range[1] - b.k_range[0] + 1) * spacing for b in bodies]
    # from the anchor upwards: the lowest such body makes every name above it uncertain
    for i in reversed(range(len(bodies))):
        body = bodies[i]
        below = [heights[j] for j in range(i + 1, len(bodies))
                 if not bodies[j].touches_fov and assignment.names[j] is not None][:3]
        if (body.touches_fov or assignment.names[i] is None or len(below) < 2
                or heights[i] <= MERGED_HEIGHT_FACTOR * float(np.median(below))):
            continue
        name = assignment.names[i]
        conf = [min(c, CONF_TRANSITIONAL) if j <= i else c
                for j, c in enumerate(assignment.confidence)]
        notes = [*assignment.notes,
                 f"{name} is {heights[i]:.0f} mm tall, more than the vertebrae below it "
                 f"({float(np.median(below)):.0f} mm): it may be two vertebrae the segmentation "
                 f"did not separate; {name} and the levels above it may be one level off, "
                 "uncertain"]
        return LevelAssignment(assignment.names, conf, notes, assignment.anchor)
    return assignment


def rib_flags(bodies: list[BodyInstance], ribs: dict[int, RibEvidence], n_k: int
              ) -> list[bool | None]:
    """Rib-bearing (True), rib-free (False) or not known (None) per body, cranial -> caudal.

    Ribs articulate with the upper part of their vertebra (costal facets on the upper body and
    pedicle, costotransverse joint on the transverse process). A vertebra cut by the TOP of the
    scan shows only its lower part: no rib seen there is no evidence that it has none, so its
    status is not known (a thoracolumbar slab must not read its partial T11 as a rib-free C7
    and name the vertebra below it T1). A vertebra cut by the bottom shows its upper part, where
    the ribs are.
    """
    flags: list[bool | None] = []
    for b in bodies:
        bears = ribs.get(b.label, RibEvidence(0, 0)).bears_ribs
        cranial_cut = b.touches_fov and b.k_range[1] >= n_k - 2  # k increases cranially
        flags.append(True if bears else (None if cranial_cut else False))
    return flags


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
    assignment = _merged_body_check(inst.bodies, assignment, spacing)
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
