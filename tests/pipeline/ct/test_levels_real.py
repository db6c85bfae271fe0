"""Vertebra segmentation + level naming on REAL CT against reference labels (golden tests).

- example_ct (TotalSegmentator example): the model's TRAINING volume, so these numbers are the
  training fit, not validation. Acceptance of issue 2: T12..L5 present and correctly named
  (centroid within 10 mm of the reference vertebra), body Dice >= 0.90.
- The 20 contrast-enhanced DICOM slices (T11-T12, dicom_seg_reference): a training volume since
  model 1.3.0 (training fit; held out before).
- Held out (never used for training): the TPTBox crop (L2-L4) with its vertebra + sub-region
  masks. The thresholds below are what the shipped model reaches (see model_card.md), with a
  margin; the numbers are printed (``pytest -s``).
- body reference of example_ct: vertebrae_body == 1 inside each reference vertebra (the body
  mask the network was trained on); the tighter vertebrae_pp_refined bodies are printed too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from osteo_node.models import default_ct_model_dir, load_model
from osteo_node.pipeline.ct.level_names import VERSE_VALUES
from osteo_node.pipeline.ct.levels import VertebraSegmentation, segment_vertebrae
from osteo_node.pipeline.ct.references import (
    TS_TOTAL,
    VERSE,
    centroid_lps,
    example_body_reference,
    reference_on,
    split,
)
from osteo_node.pipeline.metrics import dice
from osteo_node.pipeline.stages.volume import load_dicom_series, load_nifti
from osteo_node.pipeline.types import Volume
from tests.pipeline.ct.seg_reference import LevelMetrics, level_metrics

TS = "ct/totalseg_example"


@pytest.fixture(scope="module")
def model() -> Any:
    return load_model(default_ct_model_dir(), threads=2)


def _report(name: str, seg: VertebraSegmentation, metrics: list[LevelMetrics]) -> None:
    print(f"\n[{name}] levels={seg.labels.levels} confidence={seg.labels.confidence} "
          f"anchor={seg.anchor} provider={seg.model.execution_provider}")
    print(f"[{name}] notes={seg.labels.notes}")
    print(f"[{name}] timings={ {k: round(v, 2) for k, v in seg.timings_s.items()} }")
    for m in metrics:
        print(f"[{name}] {m.line()}")


@pytest.fixture(scope="module")
def example(model: Any, shared_data: Path) -> tuple[Volume, VertebraSegmentation,
                                                    list[LevelMetrics]]:
    vol = load_nifti(shared_data / TS / "example_ct.nii.gz").volume
    seg = segment_vertebrae(vol, model)
    vert = reference_on(vol, shared_data / TS / "example_ct_vertebrae.nii.gz")
    ref_vert = split(vert, TS_TOTAL)
    body = reference_on(vol, shared_data / TS / "vertebrae_body.nii.gz")
    metrics = level_metrics(vol, seg.labels, bodies=seg.bodies, ref_vert=ref_vert,
                            ref_body=example_body_reference(body, vert), min_ref_voxels=500)
    _report("example_ct (training fit)", seg, metrics)
    refined = split(reference_on(vol, shared_data / TS / "vertebrae_pp_refined.nii.gz"), VERSE)
    for m in level_metrics(vol, seg.labels, bodies=seg.bodies, ref_vert=ref_vert,
                           ref_body=refined, min_ref_voxels=500):
        print(f"[example_ct vs vertebrae_pp_refined bodies] {m.line()}")
    return vol, seg, metrics


def test_example_ct_levels_t12_to_l5_named_and_placed(example: Any) -> None:
    _vol, seg, metrics = example
    by_level = {m.level: m for m in metrics}
    for level in ("T12", "L1", "L2", "L3", "L4", "L5"):
        m = by_level[level]
        assert m.present, f"{level} missing"
        assert m.centroid_error_mm is not None
        assert m.centroid_error_mm <= 10.0, m.line()
        assert m.nearest_level == level, m.line()
        assert seg.labels.levels[level] == VERSE_VALUES[level]
    assert seg.anchor == "sacrum+rib"
    assert min(seg.labels.confidence[lv] for lv in ("T12", "L1", "L5")) >= 0.8


def test_example_ct_body_dice(example: Any) -> None:
    """Body Dice >= 0.90 for T12-L5 (issue 2, acceptance 1; example_ct is the training volume,
    so this is training fit). T12 reaches the top slice: it passes since a weak cut at the field
    of view no longer splits off a 3 mm "T11" sliver (0.85 before, 0.91 now)."""
    _vol, _seg, metrics = example
    for m in metrics:
        if m.level in ("T12", "L1", "L2", "L3", "L4", "L5"):
            assert m.body_dice is not None
            assert m.body_dice >= 0.90, m.line()


def test_example_ct_labels_live_on_the_input_grid(example: Any) -> None:
    vol, seg, _ = example
    assert seg.labels.array.shape == vol.array.shape
    assert seg.labels.geometry == vol.geometry
    assert seg.bodies.array.shape == vol.array.shape
    # every body voxel is part of the same vertebra in the whole-vertebra map
    b = seg.bodies.array > 0
    assert (seg.labels.array[b] == seg.bodies.array[b]).all()
    assert set(seg.bodies.levels) <= set(seg.labels.levels)


@pytest.fixture(scope="module")
def dicom_case(model: Any, shared_data: Path) -> tuple[Volume, VertebraSegmentation, Any]:
    vol = load_dicom_series(shared_data / TS / "dicom").volume
    seg = segment_vertebrae(vol, model)
    ref = reference_on(vol, shared_data / TS / "dicom_seg_reference.nii.gz")
    ref_vert = split(ref, {32: "T12", 33: "T11"})
    metrics = level_metrics(vol, seg.labels, bodies=seg.bodies, ref_vert=ref_vert, ref_body={})
    _report("dicom 20 slices (training fit since 1.3.0)", seg, metrics)
    union = dice(seg.labels.array > 0, np.isin(ref, (32, 33)), 1.0)
    print(f"[dicom 20 slices (training fit)] level-agnostic vertebra Dice {union:.3f}")
    return vol, seg, union


def test_dicom_slab_is_flagged_as_unanchored(dicom_case: Any) -> None:
    """40 mm of thoracic spine: no sacrum, no T1: whatever is found must not claim a level."""
    _vol, seg, _union = dicom_case
    assert seg.labels.array.shape == _vol.array.shape
    assert seg.anchor == "none"
    assert max(seg.labels.confidence.values(), default=0.0) < 0.5
    assert any("guess" in n for n in seg.labels.notes) or not seg.labels.levels


def test_dicom_slab_spine_is_found(dicom_case: Any) -> None:
    """Contrast-enhanced PET/CT slab, a training volume since 1.3.0 (training fit: vertebra Dice
    0.76). Its held-out history: 1.1.0 0.00, 1.2.0 0.43, 1.2.0 with the edge-resampling fix 0.52
    (not analysable). Regression guard."""
    _vol, _seg, union = dicom_case
    assert union >= SLAB_VERTEBRA_DICE


def test_heldout_tptbox_crop(model: Any, shared_data: Path) -> None:
    """TPTBox crop (L2-L4, 1.5 mm, only L3 complete) with vertebra and corpus masks."""
    d = shared_data / "ct" / "tptbox_sample"
    vol = load_nifti(d / "sub-ct_label-22_ct.nii.gz").volume
    seg = segment_vertebrae(vol, model)
    vert = reference_on(vol, d / "sub-ct_seg-vert_label-22_msk.nii.gz")
    sub = reference_on(vol, d / "sub-ct_seg-subreg_label-22_msk.nii.gz")
    names = {21: "L2", 22: "L3", 23: "L4"}
    ref_vert = split(vert, names)
    ref_body = {n: (vert == v) & np.isin(sub, (49, 50)) for v, n in names.items()}
    metrics = level_metrics(vol, seg.labels, bodies=seg.bodies, ref_vert=ref_vert,
                            ref_body=ref_body)
    _report("tptbox crop (held out)", seg, metrics)
    l3_body = ref_body["L3"]
    values, counts = np.unique(seg.bodies.array[l3_body], return_counts=True)
    counts = counts[values > 0]
    values = values[values > 0]
    assert len(values) > 0, "no predicted body overlaps L3"
    best = int(values[np.argmax(counts)])
    d3 = dice(seg.bodies.array == best, l3_body, 1.0)
    all_bodies = dice(seg.bodies.array > 0, np.isin(sub, (49, 50)) & (vert > 0), 1.0)
    c_err = float(np.linalg.norm(centroid_lps(seg.bodies.array == best, vol.geometry)
                                 - centroid_lps(l3_body, vol.geometry)))
    print(f"[tptbox crop (held out)] L3 body Dice {d3:.3f} (instance {best}), body centroid "
          f"error {c_err:.1f} mm, level-agnostic body Dice {all_bodies:.3f}")
    assert all_bodies >= HELDOUT_TPTBOX_BODY_DICE
    assert d3 >= HELDOUT_TPTBOX_L3_BODY_DICE
    assert c_err <= HELDOUT_TPTBOX_L3_CENTROID_MM
    assert max(seg.labels.confidence.values(), default=0.0) < 0.5  # no anchor in a crop


# what the shipped model reaches on the held-out TPTBox crop (model_card.md), with a small margin
# (1.3.0: level-agnostic body Dice 0.786, L3 body Dice 0.80, L3 centroid 4.6 mm; 1.2.0: 0.69,
# 0.75, 4.8 mm; 1.1.0: 0.66, 0.72, 5.3 mm; 1.0.0: 0.59, 0.64, 10.4 mm)
SLAB_VERTEBRA_DICE = 0.7
HELDOUT_TPTBOX_BODY_DICE = 0.74
HELDOUT_TPTBOX_L3_BODY_DICE = 0.75
HELDOUT_TPTBOX_L3_CENTROID_MM = 7.0


def test_complete_chest_ct_thoracic_levels(model: Any, shared_data: Path) -> None:
    """Complete real chest CT from DICOM (no labels; levels checked by eye, see model_card.md):
    the thoracic column is split into vertebrae, ribs anchor T12 and the names are contiguous."""
    from osteo_node.pipeline.results import level_index

    vol = load_dicom_series(shared_data / "ct/chest_ct_series/dicom").volume
    seg = segment_vertebrae(vol, model)
    print(f"\n[chest ct] levels={list(seg.labels.levels)} anchor={seg.anchor} "
          f"confidence={seg.labels.confidence} ribs="
          f"{ {k: (r.left, r.right) for k, r in seg.ribs.items()} } timings="
          f"{ {k: round(v, 2) for k, v in seg.timings_s.items()} }")
    names = [n for n in seg.labels.levels if n != "S1"]
    thoracic = [n for n in names if n.startswith("T")]
    assert seg.anchor == "rib"
    assert "T12" in names
    assert len(thoracic) >= CHEST_MIN_THORACIC
    idx = sorted(level_index(n) for n in names)
    assert len(set(idx)) == len(idx)
    if idx != list(range(idx[0], idx[0] + len(idx))):  # a gap must be explained
        assert any("not segmented" in n for n in seg.labels.notes)
    lower = [lv for lv in names if level_index("T4") <= level_index(lv) <= level_index("T12")]
    assert len(lower) >= CHEST_MIN_THORACIC
    assert [level_index(lv) for lv in lower] == list(
        range(level_index(lower[0]), level_index(lower[0]) + len(lower)))
    assert seg.ribs["T12"].bears_ribs
    assert all(not seg.ribs[n].bears_ribs for n in names if n.startswith("L"))
    # vertebrae follow each other from head to feet along the table axis
    zs = [centroid_lps(seg.labels.array == seg.labels.levels[n], vol.geometry)[2] for n in names]
    order = sorted(range(len(names)), key=lambda i: level_index(names[i]))
    assert all(zs[order[i]] > zs[order[i + 1]] for i in range(len(order) - 1))


CHEST_MIN_THORACIC = 8


GOLDEN = Path(__file__).with_name("golden_example_ct.json")


def test_example_ct_golden(example: Any) -> None:
    """Regression guard for the shipped model + runtime + level logic on example_ct: the same
    levels and label values, centroids within 3 mm, body volumes within 10 %, confidences within
    0.05 of golden_example_ct.json (regenerate it when the model is retrained on purpose)."""
    import json

    vol, seg, _ = example
    golden = json.loads(GOLDEN.read_text())
    assert set(seg.labels.levels) == set(golden["levels"])
    voxel_ml = float(np.prod(vol.geometry.spacing)) / 1000.0
    for level, g in golden["levels"].items():
        v = seg.labels.levels[level]
        assert v == g["value"]
        c = centroid_lps(seg.labels.array == v, vol.geometry)
        assert c is not None, level
        assert float(np.linalg.norm(c - np.asarray(g["centroid_lps_mm"]))) <= 3.0, level
        body_ml = float((seg.bodies.array == v).sum()) * voxel_ml
        assert abs(body_ml - g["body_ml"]) <= 0.1 * max(g["body_ml"], 5.0), level
        assert abs(seg.labels.confidence[level] - g["confidence"]) <= 0.05, level
