"""Body / posterior elements / disc / sacrum, derived from whole-vertebra reference labels on the
straightened grid (training targets of the sagittal network and body references for evaluation).

Most labelled CT gives whole vertebrae only (one label per vertebra). On the straightened grid
the canal is at u = 0 and the posterior wall of every vertebral body is parallel to it, so:

- **body**: the vertebra's voxels in front of its body's posterior wall. The wall is found on
  the mid-sagittal planes (|v| <= ``MID_HALF_MM``): per row, the posterior end of the most
  anterior run of the label that starts in front of the canal; the median over rows is the wall.
  The canal is straight on this grid, so the walls of neighbouring bodies line up: a wall more
  than ``WALL_OUTLIER_MM`` behind the median of its neighbours takes that median, and no wall
  lies behind ``MAX_WALL_U_MM`` (the front of the canal; a label that runs on into the canal,
  as where a reference labelled myelographic contrast as bone, is cut there);
- **posterior elements**: the rest of the vertebra; C1 (no body) is posterior elements only;
- **disc**: background between the bodies of consecutive vertebrae along z, column by column,
  when the gap is at most ``MAX_DISC_MM`` (from L5 to the sacrum as well);
- **sacrum**: the S1 label (VerSe value 26).
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
from numpy.typing import NDArray

from osteo_node.pipeline.ct.straighten import StraightFrame

BACKGROUND, BODY, POSTERIOR, DISC, SACRUM = 0, 1, 2, 3, 4
CLASS_NAMES = {BACKGROUND: "background", BODY: "vertebral_body",
               POSTERIOR: "posterior_elements", DISC: "intervertebral_disc", SACRUM: "sacrum"}
S1_VALUE = 26
C1_VALUE = 1
MID_HALF_MM = 4.5
MIN_BODY_RUN_MM = 4.0
BODY_START_MAX_U_MM = -4.0  # a body run starts in front of the canal centre
MAX_DISC_MM = 20.0
WALL_OUTLIER_MM = 6.0
MAX_WALL_U_MM = -5.0


def _anterior_wall(mask: NDArray[np.bool_], frame: StraightFrame) -> float | None:
    """u index of the posterior wall of the body of one vertebra (median over rows)."""
    half = round(MID_HALF_MM / frame.step)
    c = frame.nv // 2
    mid: NDArray[np.bool_] = np.asarray(mask[:, :, max(0, c - half): c + half + 1].any(axis=2))
    min_run = max(2, round(MIN_BODY_RUN_MM / frame.step))
    start_max = (BODY_START_MAX_U_MM - frame.u0) / frame.step
    walls = []
    for z in range(mid.shape[0]):
        idx = np.flatnonzero(mid[z])
        if idx.size == 0 or idx[0] > start_max:
            continue
        breaks = np.flatnonzero(np.diff(idx) > 1)
        end = idx[breaks[0]] if breaks.size else idx[-1]
        if end - idx[0] + 1 >= min_run:
            walls.append(float(end))
    return float(np.median(walls)) if walls else None


def _walls(levels: NDArray[np.integer[Any]], values: list[int], frame: StraightFrame
           ) -> dict[int, float]:
    """Posterior wall (u index) per vertebra, outliers replaced by their neighbours' median."""
    own = {v: w for v in values if v not in (S1_VALUE, C1_VALUE)
           and (w := _anterior_wall(levels == v, frame)) is not None}
    out = {}
    limit = WALL_OUTLIER_MM / frame.step
    canal_front = (MAX_WALL_U_MM - frame.u0) / frame.step
    for v, wall in own.items():
        near = [own[n] for n in range(v - 2, v + 3) if n in own and n != v]
        usual = float(np.median(near)) if near else wall
        out[v] = min(usual if wall > usual + limit else wall, canal_front)
    return out


def derive_classes(levels: NDArray[np.integer[Any]], frame: StraightFrame,
                   bodies: NDArray[np.bool_] | None = None) -> NDArray[np.uint8]:
    """Class map ``[z, u, v]`` from a VerSe-valued vertebra map on the straightened grid.

    ``bodies``: a reference body mask on the same grid, used instead of the wall rule where
    given (example_ct and TPTBox have one)."""
    out = np.zeros(levels.shape, dtype=np.uint8)
    values = [int(v) for v in np.unique(levels) if v > 0]
    body_of: dict[int, NDArray[np.bool_]] = {}
    u_idx = np.arange(frame.nu)[None, :, None]
    walls = {} if bodies is not None else _walls(levels, values, frame)
    for v in values:
        m = levels == v
        if v == S1_VALUE:
            out[m] = SACRUM
            continue
        out[m] = POSTERIOR
        if v == C1_VALUE:
            continue
        if bodies is not None:
            body = m & bodies
        elif v in walls:
            body = m & (u_idx <= walls[v])
        else:
            continue
        out[body] = BODY
        body_of[v] = body
    _add_discs(out, body_of, levels, frame)
    return out


def _add_discs(out: NDArray[np.uint8], body_of: dict[int, NDArray[np.bool_]],
               levels: NDArray[np.integer[Any]], frame: StraightFrame) -> None:
    nz = out.shape[0]
    z = np.arange(nz)[:, None, None]
    max_gap = MAX_DISC_MM / frame.step
    sacrum = levels == S1_VALUE
    order = sorted(body_of)  # VerSe values increase caudally
    pairs = [(a, b) for a, b in itertools.pairwise(order) if b == a + 1]
    if order and sacrum.any() and order[-1] in (24, 25):
        pairs.append((order[-1], S1_VALUE))
    for upper, lower in pairs:
        up = body_of[upper]
        low = body_of[lower] if lower != S1_VALUE else sacrum
        has = up.any(axis=0) & low.any(axis=0)
        if not has.any():
            continue
        bottom_of_upper = np.where(up, z, nz).min(axis=0)  # z increases cranially
        top_of_lower = np.where(low, z, -1).max(axis=0)
        gap_ok = has & (bottom_of_upper > top_of_lower + 1) & \
            (bottom_of_upper - top_of_lower - 1 <= max_gap)
        between = (z > top_of_lower[None]) & (z < bottom_of_upper[None]) & gap_ok[None]
        out[between & (levels == 0)] = DISC
