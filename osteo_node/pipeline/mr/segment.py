"""MR segmentation stage: volume -> body probability -> binary -> ordered body instances -> levels.

Returns the instance map on the SOURCE grid (``[k, j, i]`` of the Volume) plus the level names,
so the measure/grade stages and the exporters work exactly as for CT.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from osteo_node.pipeline.mr.infer import body_probability
from osteo_node.pipeline.mr.instances import InstanceParams, separate_bodies
from osteo_node.pipeline.mr.levels import LevelAssignment, LevelParams, assign_levels
from osteo_node.pipeline.mr.model import BodyModel
from osteo_node.pipeline.mr.orient import CanonicalView, canonical_view
from osteo_node.pipeline.results import LEVELS
from osteo_node.pipeline.types import LabelVolume, Volume

RELATIVE_VALUE_BASE = 100  # label values of relative (unnamed) bodies: 101, 102, ...


@dataclass
class MRSegmentation:
    labels: LabelVolume  # source grid; levels maps names (L1.. or V1..) to label values
    names: list[str]  # head to feet
    assignment: LevelAssignment
    view: CanonicalView
    notes: list[str] = field(default_factory=list)


def label_value(name: str, anchored: bool, position: int) -> int:
    """VerSe-style value (C1 = 1 ... L5 = 24) for named levels, 100 + n for relative ones."""
    if anchored and name in LEVELS:
        return LEVELS.index(name) + 1
    return RELATIVE_VALUE_BASE + position


def segment_bodies(
    volume: Volume,
    model: BodyModel,
    instance_params: InstanceParams | None = None,
    level_params: LevelParams | None = None,
) -> MRSegmentation:
    view = canonical_view(volume.geometry)
    canon = np.ascontiguousarray(view.to_canonical(volume.array))
    prob = body_probability(model, canon, (view.spacing[1], view.spacing[2]))
    mask = prob >= model.manifest.threshold
    del prob
    inst = separate_bodies(mask, view.spacing, instance_params)
    assignment = assign_levels(inst.labels, mask, view.spacing[1], level_params)
    values = [label_value(n, assignment.anchored, i) for i, n in enumerate(assignment.names, 1)]
    lut = np.zeros(inst.count + 1, dtype=np.int16)
    lut[1:] = values
    source = view.from_canonical(lut[inst.labels])
    labels = LabelVolume(
        array=source,
        geometry=volume.geometry,
        levels={n: v for n, v in zip(assignment.names, values, strict=True)},
        confidence={n: c for n, c in zip(assignment.names, assignment.confidence, strict=True)},
        notes=[*inst.notes, *assignment.notes],
    )
    return MRSegmentation(labels, list(assignment.names), assignment, view, list(labels.notes))


def body_masks(seg: MRSegmentation) -> list[NDArray[np.bool_]]:
    """One boolean source-grid mask per body, head to feet (for evaluation)."""
    return [seg.labels.array == seg.labels.levels[n] for n in seg.names]
