"""Vertebra instances on the straightened column from the sagittal network's probabilities.

1. Discs: pieces of the disc class in the column's cross-section, each fitted with a plane
   (:mod:`.disc_profile`, which also applies the body-height prior).
2. Bodies: body-class voxels between the disc planes below and above each run (a tilted disc,
   a wedge-shaped disc above a fracture, the lumbosacral disc are followed); the largest
   connected piece per body.
3. Posterior elements: grown from the bodies through the bone of the vertebra (watershed with a
   flat cost: each pedicle reaches its own body first); bone not connected to a body is dropped.
4. Sacrum: the largest sacrum-class component.

Arrays are ``[z, u, v]`` on the straightened grid; rows increase cranially.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from osteo_node.pipeline.ct.disc_profile import (
    WEAK_DISC_P,
    BodyRun,
    GapEvidence,
    bodies_between,
    column_rows,
    find_discs,
)
from osteo_node.pipeline.ct.image_discs import image_discs
from osteo_node.pipeline.ct.straighten import StraightFrame

BODY, POSTERIOR, DISC, SACRUM = 1, 2, 3, 4
FOOTPRINT_SMOOTH_MM = 10.0
OPEN_END_ROWS = 3  # a column this close to the end of the scan is cut by it
FOOTPRINT_MIN = 0.3
FOOTPRINT_MAX_U_MM = -2.0  # bodies and discs lie in front of the canal centre
FOOTPRINT_HALF_WIDTH_MM = 25.0
SACRUM_ML = 4.0  # S1 alone at the bottom edge of a lumbar scan is about 6 ml of sacrum class
SACRUM_SEEN_MM = 15.0
SACRUM_AT_EDGE_ML = 8.0  # ... and at least this much when the bottom of the scan cuts it (the
# held-out contrast slab, 40 mm at T11-T12: 5.7 ml of sacrum class at its bottom edge)
S1_PART_SHARE = 0.25  # a lowest "body" on the sacrum smaller than this x the others: S1
PIECE_SHARE = 0.85  # a body-class piece this much inside one run is that body whole
BALL = ndimage.generate_binary_structure(3, 1)  # closing: notches up to about 3 mm
GROW_STEPS = 45  # breadth-first steps from a body into its posterior elements (1.5 mm each)


@dataclass
class ColumnInstances:
    """Bodies caudal -> cranial (label i + 1 is ``runs[i]``) and their maps on the grid."""

    runs: list[BodyRun]
    bodies: NDArray[np.int16]
    vertebrae: NDArray[np.int16]
    sacrum: NDArray[np.bool_] | None
    body_probability: list[float]
    column_top: int = 0  # last row of the column (body and disc cross-section)


def footprint(probs: NDArray[np.float32], frame: StraightFrame) -> NDArray[np.bool_]:
    """Cells of each row that belong to the column's body/disc cross-section."""
    sigma = FOOTPRINT_SMOOTH_MM / frame.step
    bd = ndimage.gaussian_filter1d(probs[BODY] + probs[DISC], sigma, axis=0, mode="nearest")
    u = frame.u_of(np.arange(frame.nu, dtype=np.float64))[None, :, None]
    v = (np.arange(frame.nv) - frame.nv // 2)[None, None, :] * frame.step
    return np.asarray((bd > FOOTPRINT_MIN) & (u < FOOTPRINT_MAX_U_MM)
                      & (np.abs(v) <= FOOTPRINT_HALF_WIDTH_MM))


def profile(probs: NDArray[np.float32], f: NDArray[np.bool_], frame: StraightFrame
            ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per row: body amount and column cross-section (both mm^2)."""
    cell = frame.step * frame.step
    body = (probs[BODY] * f).sum(axis=(1, 2), dtype=np.float64)
    area = f.sum(axis=(1, 2), dtype=np.float64) * cell
    return body * cell, area


def _largest_piece(mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    lab, n = ndimage.label(mask)
    if n <= 1:
        return mask
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return np.asarray(lab == int(np.argmax(sizes)))


def _planes_map(shape: tuple[int, ...], runs: list[BodyRun]) -> NDArray[np.int16]:
    """Run index + 1 of every cell by the disc planes (0 outside every run)."""
    nz, nu, nv = shape
    z = np.arange(nz, dtype=np.float64)[:, None, None]
    uu, vv = np.meshgrid(np.arange(nu, dtype=np.float64), np.arange(nv, dtype=np.float64),
                         indexing="ij")
    out = np.zeros(shape, dtype=np.int16)
    for i, run in enumerate(runs):
        below = run.lower.z_at(uu, vv)[None] if run.lower is not None else -1.0
        above = run.upper.z_at(uu, vv)[None] if run.upper is not None else float(nz)
        out[(z > below) & (z < above) & (out == 0)] = i + 1
    return out


def _body_maps(probs: NDArray[np.float32], runs: list[BodyRun]) -> NDArray[np.int16]:
    """Body voxels per run. A connected piece of the body class that lies (almost) entirely
    between two discs is that body whole, so a plane that is a little off near the body's edge
    does not cut a corner off; pieces bridging two runs (an osteophyte, a faint disc) are cut
    at the planes. Each body is then closed (``CLOSE_MM``: the narrow notches of a network
    outline, not a fracture's depression) and its holes filled."""
    body_cls = np.argmax(probs, axis=0) == BODY
    by_plane = _planes_map(body_cls.shape, runs)
    pieces, n = ndimage.label(body_cls)
    out = np.zeros(body_cls.shape, dtype=np.int16)
    if n:
        counts = np.zeros((n + 1, len(runs) + 1), dtype=np.int64)
        np.add.at(counts, (pieces[body_cls], by_plane[body_cls]), 1)
        best = counts.argmax(axis=1)
        whole = counts.max(axis=1) >= PIECE_SHARE * np.maximum(counts.sum(axis=1), 1)
        owner = np.where(whole, best, -1)
        owner[0] = 0
        own = owner[pieces]
        out = np.where(body_cls, np.where(own >= 0, own, by_plane), 0).astype(np.int16)
    final = np.zeros_like(out)
    for i in range(1, len(runs) + 1):
        m = out == i
        if not m.any():
            continue
        m = _largest_piece(m)
        box = ndimage.find_objects(m.astype(np.uint8))[0]
        pad = tuple(slice(max(0, b.start - 2), b.stop + 2) for b in box)
        closed = ndimage.binary_fill_holes(ndimage.binary_closing(m[pad], structure=BALL))
        free = (final[pad] == 0) & ((out[pad] == 0) | (out[pad] == i))
        final[pad][closed & free] = i
    return final


def _grow_posterior(probs: NDArray[np.float32], bodies: NDArray[np.int16]) -> NDArray[np.int16]:
    """Each vertebra's bone reached from its body through bone (breadth-first, six
    neighbours, GROW_MM at most): a pedicle reaches its own body first."""
    cls = np.argmax(probs, axis=0)
    bone = (cls == BODY) | (cls == POSTERIOR)
    out = np.where(bone, bodies, 0).astype(np.int16)
    if not out.any():
        return out
    box = ndimage.find_objects(bone.astype(np.uint8))[0]
    lab, free = out[box], bone[box] & (out[box] == 0)
    for _ in range(GROW_STEPS):
        grown = lab.copy()
        for axis in range(3):
            for shift in (1, -1):
                moved = np.roll(lab, shift, axis=axis)
                edge = [slice(None)] * 3
                edge[axis] = slice(0, 1) if shift == 1 else slice(-1, None)
                moved[tuple(edge)] = 0
                take = free & (grown == 0) & (moved > 0)
                grown[take] = moved[take]
        new = free & (grown > 0)
        if not new.any():
            break
        lab = grown
        free &= ~new
    out[box] = lab
    return out


def _sacrum(probs: NDArray[np.float32], frame: StraightFrame) -> NDArray[np.bool_] | None:
    """The largest sacrum-class piece, when it can be a sacrum: at least SACRUM_ML of it and
    SACRUM_SEEN_MM of it from top to bottom (a sliver of a lumbar or thoracic body at the
    bottom edge of a chest CT that the network took for sacrum is not), and at least
    SACRUM_AT_EDGE_ML when the bottom of the scan cuts it."""
    cls = np.argmax(probs, axis=0)
    m = cls == SACRUM
    if not m.any():
        return None
    piece = _largest_piece(m)
    rows = np.flatnonzero(piece.any(axis=(1, 2)))
    seen_mm = (int(rows.max()) - int(rows.min()) + 1) * frame.step
    ml = piece.sum() * frame.step**3 / 1000.0
    if ml < SACRUM_ML or seen_mm < SACRUM_SEEN_MM:
        return None
    if ml < SACRUM_AT_EDGE_ML and frame.scan_edge_below and int(rows.min()) <= OPEN_END_ROWS:
        return None  # a small piece cut by the bottom of the scan: too little to be sure
    return piece


def _below_sacrum(bodies: NDArray[np.int16], runs: list[BodyRun],
                  sacrum: NDArray[np.bool_] | None) -> set[int]:
    """Runs that are parts of S1, not vertebrae: those whose body centre lies below the top of
    the sacrum, and the lowest run when no disc separates it from the sacrum, its body overlaps
    the sacrum's rows and is much smaller than a vertebral body (the top of S1 that the network
    took for body: L5 always has its L5/S1 disc below it)."""
    n = len(runs)
    if sacrum is None or n == 0:
        return set()
    top = float(np.percentile(np.nonzero(sacrum)[0], 95))
    index = list(range(1, n + 1))
    with np.errstate(invalid="ignore", divide="ignore"):  # a run left without voxels: NaN
        rows = ndimage.center_of_mass(bodies > 0, labels=bodies, index=index)
    out = {i for i, c in enumerate(rows) if not np.isnan(c[0]) and c[0] < top}
    sizes = np.asarray(ndimage.sum(bodies > 0, labels=bodies, index=index), dtype=np.float64)
    lowest = min(set(range(n)) - out, default=None)
    if lowest is None or runs[lowest].lower is not None or n - len(out) < 3:
        return out
    others = np.delete(sizes, sorted(out | {lowest}))
    sacrum_rows = set(np.flatnonzero(sacrum.any(axis=(1, 2))).tolist())
    body_rows = set(np.flatnonzero((bodies == lowest + 1).any(axis=(1, 2))).tolist())
    if sizes[lowest] < S1_PART_SHARE * float(np.median(others)) and body_rows & sacrum_rows:
        out.add(lowest)
    return out


def _axis(probs: NDArray[np.float32], f: NDArray[np.bool_], frame: StraightFrame
          ) -> tuple[float, float]:
    """(u, v) of the column's axis: the median body position in its cross-section."""
    body = (np.argmax(probs, axis=0) == BODY) & f
    if not body.any():
        return (float(frame.nu // 3), float(frame.nv // 2))
    _, uu, vv = np.nonzero(body)
    return float(np.median(uu)), float(np.median(vv))


def hu_profile(image: NDArray[np.float32] | None, f: NDArray[np.bool_]
               ) -> NDArray[np.float64] | None:
    """Mean HU of the column's cross-section per row (NaN where there is none)."""
    if image is None:
        return None
    n = f.sum(axis=(1, 2))
    total = np.where(f, image, 0.0).sum(axis=(1, 2), dtype=np.float64)
    return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def disc_share(p_disc: NDArray[np.float32], f: NDArray[np.bool_]) -> NDArray[np.float64]:
    """Mean disc probability over the column's cross-section per row (0 where there is none)."""
    n = f.sum(axis=(1, 2))
    total = np.where(f, p_disc, 0.0).sum(axis=(1, 2), dtype=np.float64)
    return np.asarray(total / np.maximum(n, 1))


def find_instances(probs: NDArray[np.float32], frame: StraightFrame,
                   image: NDArray[np.float32] | None = None) -> ColumnInstances | None:
    """Bodies, whole vertebrae and sacrum on the straightened grid; None without a column.
    ``image``: the straightened CT (HU), for the image's own endplate cue where the network
    saw no disc."""
    sacrum = _sacrum(probs, frame)
    if sacrum is None and probs[SACRUM].max() > 0.5:  # no real sacrum: what the network
        probs = probs.copy()  # took for one is (part of) a vertebral body
        probs[BODY] += probs[SACRUM]
        probs[SACRUM] = 0.0
    f = footprint(probs, frame)
    body_amount, area = profile(probs, f, frame)
    rows = column_rows(area)
    if rows is None:
        return None
    axis = _axis(probs, f, frame)
    discs = find_discs(probs[DISC], f, area, axis, frame.step)
    seen = [] if image is None else image_discs(image, f, area, axis, frame.step)
    open_ends = (rows[0] <= OPEN_END_ROWS and frame.scan_edge_below,
                 rows[1] >= frame.nz - 1 - OPEN_END_ROWS and frame.scan_edge_above)
    weak = find_discs(probs[DISC], f, area, axis, frame.step, WEAK_DISC_P)
    evidence = GapEvidence(hu_profile(image, f), disc_share(probs[DISC], f), seen, weak)
    runs = bodies_between(discs, rows, body_amount, frame.step, evidence, open_ends)
    bodies = _body_maps(probs, runs)
    below = _below_sacrum(bodies, runs, sacrum)
    present = [i for i, _ in enumerate(runs) if (bodies == i + 1).any() and i not in below]
    runs = [runs[i] for i in present]
    relabel = np.zeros(max(present, default=0) + 2, dtype=np.int16)
    for new, old in enumerate(present, start=1):
        relabel[old + 1] = new
    bodies = relabel[bodies]
    vertebrae = _grow_posterior(probs, bodies)
    conf = ndimage.mean(probs[BODY], labels=bodies, index=list(range(1, len(runs) + 1))) \
        if runs else []
    return ColumnInstances(runs=runs, bodies=bodies, vertebrae=vertebrae, sacrum=sacrum,
                           body_probability=[float(c) for c in np.atleast_1d(conf)],
                           column_top=rows[1])
