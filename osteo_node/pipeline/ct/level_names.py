"""Anatomical level names for vertebral bodies ordered cranial -> caudal (pure logic).

The network knows only body / posterior elements / disc / sacrum; names come from anatomy:
the sacrum (the body directly above it is L5), the last rib-bearing vertebra (T12) and the
first rib-bearing vertebra below a rib-free one (T1), counting up/down from them, with a
confidence per name. ``levels.label_model_grid`` feeds this module with the instances and rib
evidence it found on the network's grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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
CONF_C2 = 0.8
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
C2_HEIGHT_FACTOR = 1.5
C2_SPACE_ABOVE_MM = 10.0


@dataclass(frozen=True)
class BodyInstance:
    """One vertebral body along the column, as naming needs it (``label``: its instance value).

    ``k_range``: its rows (inclusive) on a grid whose rows increase cranially; ``touches_fov``:
    cut by the top or bottom of the scan (partial); ``cut_cranially``: by the top;
    ``cut_endplate``: one of its endplates was not resolved (no disc seen there)."""

    label: int
    centroid_kji: tuple[float, float, float]
    k_range: tuple[int, int]
    volume_ml: float
    touches_fov: bool
    cut_endplate: bool = False
    cut_cranially: bool = False


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


def _sacrum_and_rib(pos: list[int], t12: int) -> LevelAssignment:
    """Both anchors in view: they agree when 5 lumbar vertebrae lie between them."""
    lumbar = pos[-1] - pos[t12]
    if lumbar == 5:
        names, conf = _from_anchor(pos, t12, "T12", CONF_AGREE)
        return LevelAssignment(
            names, conf, ["levels from the sacrum and the last rib-bearing vertebra (agree)"],
            "sacrum+rib",
        )
    names, conf = _from_anchor(pos, t12, "T12", CONF_TRANSITIONAL, lumbar=min(lumbar, 6))
    notes = [
        f"transitional anatomy suspected: {lumbar} rib-free vertebrae between the last "
        "rib-bearing vertebra and the sacrum (expected 5); levels counted from the last rib "
        "(T12), uncertain"
    ]
    return LevelAssignment(names, conf, notes, "sacrum+rib")


def _last_rib(pos: list[int], t12: int, t1: int | None) -> LevelAssignment:
    """Counted from T12; uncertain when the first rib (T1) is not 11 levels above it."""
    names, conf = _from_anchor(pos, t12, "T12", CONF_RIB_ONLY)
    notes = ["levels counted from the last rib-bearing vertebra (T12); sacrum not in view"]
    if t1 is not None and pos[t12] - pos[t1] != 11:
        conf = [min(c, CONF_TRANSITIONAL) for c in conf]
        notes.append(f"{pos[t12] - pos[t1] + 1} rib-bearing vertebrae between the first and "
                     "the last rib (expected 12): a rib was missed or transitional anatomy; "
                     "uncertain")
    return LevelAssignment(names, conf, notes, "rib")


def _sacrum_only(pos: list[int], ribs: list[bool | None]) -> LevelAssignment:
    """Counted up from L5; uncertain when the body counted as T12 is known to be rib-free."""
    names, conf = _from_anchor(pos, len(pos) - 1, "L5", CONF_SACRUM_ONLY)
    notes = ["levels counted up from the sacrum (L5 above it), assuming 5 lumbar vertebrae"]
    if "T12" in names and ribs[names.index("T12")] is False:
        conf = [min(c, CONF_TRANSITIONAL) for c in conf]
        notes.append("no rib found at the vertebra counted as T12: rib detection missed "
                     "it or transitional anatomy; uncertain")
    return LevelAssignment(names, conf, notes, "sacrum")


def _from_c2(pos: list[int], t1: int | None) -> LevelAssignment:
    """The topmost body is C2 (the column ends below the skull); T1, when found, must agree."""
    names, conf = _from_anchor(pos, 0, "C2", CONF_C2)
    notes = ["levels counted down from C2 (the topmost vertebral body, below the skull base)"]
    if t1 is not None:
        if pos[t1] - pos[0] == 6:
            names, conf = _from_anchor(pos, 0, "C2", CONF_AGREE)
            notes = ["levels from C2 and the first rib-bearing vertebra (T1) (agree)"]
        else:
            conf = [min(c, CONF_TRANSITIONAL) for c in conf]
            notes.append(f"the first rib-bearing vertebra is {pos[t1] - pos[0] + 2} levels below "
                         "C2 (expected T1 = 7 levels below C2): a cervical rib, a missed rib or "
                         "a missed vertebra; uncertain")
    return LevelAssignment(names, conf, notes, "c2")


def _without_caudal_anchor(pos: list[int], t1: int | None, last_rib: int | None,
                           ribs_in_view: bool) -> LevelAssignment:
    """No sacrum and no last rib: count from T1, else guess from the ribs or from L1."""
    if t1 is not None:
        names, conf = _from_anchor(pos, t1, "T1", CONF_T1_ONLY)
        return LevelAssignment(
            names, conf, ["levels counted down from the first rib-bearing vertebra (T1)"], "t1"
        )
    if last_rib is not None:
        names, conf = _from_anchor(pos, last_rib, "T12", CONF_GUESS_RIBS)
        note = ("no anatomical anchor in view (neither sacrum nor the last rib-bearing "
                "vertebra nor T1): the lowest rib-bearing vertebra was assumed to be T12; "
                "levels are a guess")
        return LevelAssignment(names, conf, [note], "none")
    if ribs_in_view:  # a thin slab crossed by ribs whose heads lie outside it
        names, conf = _from_anchor(pos, len(pos) - 1, "T12", CONF_GUESS_NONE)
        note = ("no anatomical anchor in view and no rib head, but ribs cross the scan: the "
                "lowest vertebra was assumed to be T12; levels are a guess")
        return LevelAssignment(names, conf, [note], "none")
    names, conf = _from_anchor(pos, 0, "L1", CONF_GUESS_NONE)
    note = ("no anatomical anchor in view and no ribs: vertebrae assumed lumbar from L1 "
            "downwards; levels are a guess")
    return LevelAssignment(names, conf, [note], "none")


def positions(missing: list[int]) -> list[int]:
    """Position of each body along the spine (cranial -> caudal), counting the vertebrae
    missed before it (``missing``, see :func:`missing_between`)."""
    return [i + sum(missing[: i + 1]) for i in range(len(missing))]


def assign_levels(ribs: list[bool | None], sacrum: bool, missing: list[int] | None = None,
                  *, c2_on_top: bool = False, ribs_in_view: bool = False) -> LevelAssignment:
    """Names for bodies ordered cranial -> caudal from rib flags and sacrum presence.

    ``ribs[i]``: True rib-bearing, False rib-free, None not known (see ``rib_flags``): an anchor
    needs a rib-free vertebra that is known to be rib-free next to the rib-bearing one.
    ``missing[i]``: vertebrae missed between body i-1 and body i (see missing_between).
    ``c2_on_top``: the topmost body is C2 (see :func:`is_c2`); used when neither the sacrum nor
    the last rib is in view. ``ribs_in_view``: rib-like bone crosses the scan even where no
    rib head is seen (only steers the guess when there is no anchor at all).
    """
    n = len(ribs)
    if n == 0:
        return LevelAssignment([], [], ["no vertebral body found"], "none")
    missing = missing or [0] * n
    pos = positions(missing)
    rib_idx = [i for i, r in enumerate(ribs) if r]
    last_rib = rib_idx[-1] if rib_idx else None
    first_rib = rib_idx[0] if rib_idx else None
    t12 = last_rib if last_rib is not None and last_rib < n - 1 and ribs[last_rib + 1] is False \
        else None
    t1 = first_rib if first_rib is not None and first_rib > 0 and ribs[first_rib - 1] is False \
        else None
    if t12 is not None:
        return _sacrum_and_rib(pos, t12) if sacrum else _last_rib(pos, t12, t1)
    if sacrum:
        return _sacrum_only(pos, ribs)
    if c2_on_top:
        return _from_c2(pos, t1)
    return _without_caudal_anchor(pos, t1, last_rib, ribs_in_view)


def is_c2(bodies: list[BodyInstance], space_above_mm: float, spacing: float) -> bool:
    """The topmost body (``bodies`` cranial -> caudal) is C2: complete, with the scan going on
    above the column (the skull base, no further body) and much taller than the bodies below
    it (the dens rises from its body: C2 is about twice as tall as C3-C6; Panjabi MM et al.
    Spine 1991;16:861-869)."""
    if len(bodies) < 3 or bodies[0].touches_fov or space_above_mm < C2_SPACE_ABOVE_MM:
        return False
    heights = [(b.k_range[1] - b.k_range[0] + 1) * spacing for b in bodies[:5]]
    return heights[0] >= C2_HEIGHT_FACTOR * float(np.median(heights[1:]))


def merged_body_check(bodies: list[BodyInstance], assignment: LevelAssignment, spacing: float
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


def rib_flags(bodies: list[BodyInstance], bearing: dict[int, bool]) -> list[bool | None]:
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
        bears = bearing.get(b.label, False)
        flags.append(True if bears else (None if b.cut_cranially else False))
    return flags


def last_rib_at_disc(flags: list[bool | None], at_disc_above: list[bool], sacrum: bool,
                     pos: list[int]) -> tuple[list[bool | None], str | None]:
    """The last rib-bearing vertebra whose every rib head lies at the disc above it, touching
    the vertebra above (``at_disc_above``, see ``RibEvidence.only_at_disc_above``), while the
    sacrum counts only 4 rib-free vertebrae below it: those heads are the last rib's own (T12's
    rib articulates with its own body, at most a few mm from the disc), so the vertebra is
    rib-free and the two anchors agree. Flags and ``pos`` are cranial -> caudal."""
    rib_idx = [i for i, r in enumerate(flags) if r]
    if not sacrum or len(rib_idx) < 2:
        return flags, None
    last = rib_idx[-1]
    if last + 1 >= len(flags) or flags[last + 1] is not False or not at_disc_above[last] \
            or not flags[last - 1] or pos[-1] - pos[last] != 4:
        return flags, None
    out = list(flags)
    out[last] = False
    return out, ("the lowest rib heads lie at the disc above their vertebra and touch the "
                 "vertebra above: counted as that vertebra's ribs (T12), which agrees with "
                 "the sacrum (5 lumbar vertebrae)")
