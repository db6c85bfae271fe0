"""Orientation, instance separation, level naming and heights on REAL manual body masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from osteo_node.pipeline.mr.evaluate import dice, order_reference
from osteo_node.pipeline.mr.heights import measure_bodies
from osteo_node.pipeline.mr.instances import separate_bodies
from osteo_node.pipeline.mr.levels import assign_levels
from osteo_node.pipeline.mr.orient import canonical_view
from osteo_node.pipeline.sitk_io import geometry_of
from osteo_node.pipeline.types import Geometry


def _load(shared_data: Path, case: str) -> tuple[np.ndarray, Geometry]:
    img = sitk.ReadImage(str(shared_data / "mr" / "vertebral_bodies" / f"{case}_label.nii.gz"))
    return sitk.GetArrayFromImage(img).astype(np.int32), geometry_of(img)


def test_canonical_view_round_trip_and_axes(shared_data: Path) -> None:
    ref, geom = _load(shared_data, "vb3_01")
    view = canonical_view(geom)
    canon = view.to_canonical(ref)
    assert np.array_equal(view.from_canonical(canon), ref)
    # labels 1..5 are L1..L5 top to bottom: canonical axis 1 runs head -> feet
    rows = [np.argwhere(canon == v)[:, 1].mean() for v in range(1, 6)]
    assert rows == sorted(rows)
    # canonical axis 2 runs anterior -> posterior: LPS y grows with the column index
    a = geom.index_to_lps(np.array([0.0, 0.0, 0.0]))
    kji = np.zeros(3)
    kji[view.perm[2]] = 10 if not view.flip[2] else -10
    b = geom.index_to_lps(kji[::-1])
    assert b[1] > a[1]
    assert view.sagittal_obliquity_deg < 1


@pytest.mark.parametrize("case", ["vb3_01", "vb2_02"])
def test_manual_masks_separate_into_ordered_bodies(shared_data: Path, case: str) -> None:
    ref, geom = _load(shared_data, case)
    view = canonical_view(geom)
    canon = view.to_canonical(ref)
    inst = separate_bodies(canon > 0, view.spacing)
    order = order_reference(ref, geom)
    assert inst.count == len(order)
    labels = view.from_canonical(inst.labels)
    for n, value in enumerate(order, start=1):
        assert dice(labels == n, ref == value) > 0.98


def test_bridged_bodies_are_split(shared_data: Path) -> None:
    """Two real bodies joined across their disc (as a merged prediction) come out as two."""
    ref, geom = _load(shared_data, "vb3_01")
    view = canonical_view(geom)
    canon = view.to_canonical(ref)
    l2, l3 = canon == 2, canon == 3
    # fill the disc between L2 and L3: close the union along the cranio-caudal axis
    both = ndimage.binary_closing(l2 | l3, structure=np.ones((1, 15, 1), bool))
    assert ndimage.label(both)[1] == 1
    mask = both | (canon == 1) | (canon == 4) | (canon == 5)
    inst = separate_bodies(mask, view.spacing)
    assert inst.count == 5
    assert inst.split_components == 1
    assert dice(inst.labels == 2, l2) > 0.85
    assert dice(inst.labels == 3, l3) > 0.85


def test_levels_anchored_on_sacrum_gap_else_relative(shared_data: Path) -> None:
    ref, geom = _load(shared_data, "vb2_02")  # T11..L5 with sacrum below
    view = canonical_view(geom)
    canon = view.to_canonical(ref) > 0
    inst = separate_bodies(canon, view.spacing)
    levels = assign_levels(inst.labels, canon, view.spacing[1])
    assert levels.anchored
    assert levels.names == ["T11", "T12", "L1", "L2", "L3", "L4", "L5"]
    # cut the field of view 5 mm below the lowest body: junction not in view
    bottom = int(np.flatnonzero((inst.labels == inst.count).any(axis=(0, 2)))[-1])
    cut = bottom + int(5 / view.spacing[1])
    levels = assign_levels(inst.labels[:, :cut], canon[:, :cut], view.spacing[1])
    assert not levels.anchored
    assert levels.names == [f"V{i}" for i in range(1, 8)]
    assert "lumbosacral junction not in view" in levels.notes[0]


def test_heights_of_manual_masks_are_plausible(shared_data: Path) -> None:
    ref, geom = _load(shared_data, "vb3_01")
    view = canonical_view(geom)
    order = order_reference(ref, geom)
    bodies = measure_bodies(ref, order, geom, view)
    assert len(bodies) == 5
    for b in bodies:
        h = b.measurement.heights
        assert not b.truncated
        for value in (h.anterior, h.middle, h.posterior):
            assert value is not None
            assert 18.0 < value < 40.0
    # centroids run head to feet (LPS z decreasing)
    zs = [b.centroid_mm[2] for b in bodies]
    assert zs == sorted(zs, reverse=True)
