"""Each vertebral body on a fine local grid, for the heights of thick-slice series.

The straightened column is segmented at 1.5 mm; the label maps go back to the input grid,
which for a 3-5 mm abdominal series quantises every endplate to a slice: a 25 mm body is 5-8
slices tall and one slice is a Genant grade. When the input grid is coarser than
:data:`FINE_MM` along any axis, each body is also sampled from the straightened body map
(linear interpolation, >= 0.5: the same rule as on the input grid) on an axis-aligned local
grid of :data:`FINE_MM` around it; the heights are measured on that mask. Finer inputs need
none (their own grid is at least as fine).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from osteo_node.pipeline.ct.stage_types import FineMask
from osteo_node.pipeline.ct.straighten import StraightFrame
from osteo_node.pipeline.types import Geometry, Volume

FINE_MM = 0.75
MARGIN_MM = 3.0


def needs_fine_masks(geometry: Geometry) -> bool:
    return max(geometry.spacing) > 1.0


def _box_lps(mask_box: tuple[slice, ...], geometry: Geometry) -> tuple[NDArray[np.float64],
                                                                         NDArray[np.float64]]:
    """LPS bounding box (min, max corners) of an index box of the input grid."""
    ks, js, is_ = mask_box
    corners = np.array([[i, j, k] for i in (is_.start - 0.5, is_.stop - 0.5)
                        for j in (js.start - 0.5, js.stop - 0.5)
                        for k in (ks.start - 0.5, ks.stop - 0.5)], dtype=np.float64)
    lps = geometry.index_to_lps(corners)
    return lps.min(axis=0) - MARGIN_MM, lps.max(axis=0) + MARGIN_MM


def fine_body_masks(straight_bodies: NDArray[np.integer], frame: StraightFrame,
                    volume: Volume, body_map: NDArray[np.integer],
                    values: Mapping[str, tuple[int, int]]) -> dict[str, FineMask]:
    """Per level, its body on a local LPS-aligned grid of ``FINE_MM``.

    ``straight_bodies``: the straightened instance map; ``body_map``: the bodies on the input
    grid (VerSe values); ``values``: level -> (instance label, VerSe value)."""
    out: dict[str, FineMask] = {}
    boxes = ndimage.find_objects(body_map)
    inst_boxes = ndimage.find_objects(straight_bodies)
    for level, (label, verse) in values.items():
        if verse - 1 >= len(boxes) or boxes[verse - 1] is None \
                or label - 1 >= len(inst_boxes) or inst_boxes[label - 1] is None:
            continue
        lo, hi = _box_lps(boxes[verse - 1], volume.geometry)
        shape = np.maximum(1, np.ceil((hi - lo) / FINE_MM).astype(int) + 1)
        geo = Geometry(tuple(float(v) for v in lo), (FINE_MM, FINE_MM, FINE_MM))  # type: ignore[arg-type]
        # the instance's own part of the straightened map (plus a cell), as 0/1
        sb = inst_boxes[label - 1]
        assert sb is not None
        crop = tuple(slice(max(0, s.start - 2), s.stop + 2) for s in sb)
        part = (straight_bodies[crop] == label).astype(np.float32)
        ii, jj, kk = np.meshgrid(*(np.arange(n, dtype=np.float64) for n in shape), indexing="ij")
        ijk = np.stack([ii.ravel(), jj.ravel(), kk.ravel()], axis=1)
        s = frame.index_of(geo.index_to_lps(ijk)) - [c.start for c in crop]
        sampled = ndimage.map_coordinates(part, s.T, order=1, mode="constant", cval=0.0,
                                          prefilter=False)
        mask = (sampled >= 0.5).reshape(shape).transpose(2, 1, 0)  # -> [k, j, i]
        if mask.any():
            out[level] = FineMask(np.ascontiguousarray(mask), geo)
    return out
