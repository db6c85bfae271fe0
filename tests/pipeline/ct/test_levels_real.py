"""Vertebra segmentation + level naming on REAL CT against reference labels (golden tests).

- example_ct (TotalSegmentator example): the model's TRAINING volume, so these numbers are the
  training fit, not validation. Acceptance of issue 2: T12..L5 present and correctly named
  (centroid within 10 mm of the reference vertebra), body Dice >= 0.90.
- Held out (never used for training): the 20 contrast-enhanced DICOM slices (T11-T12) with
  dicom_seg_reference, and the TPTBox crop (L2-L4) with its vertebra + sub-region masks. The
  thresholds below are what the shipped model reaches (see model_card.md), with a margin; the
  numbers are printed (``pytest -s``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from osteo_node.models import default_ct_model_dir, load_model
from osteo_node.pipeline.ct.levels import VERSE_VALUES, VertebraSegmentation, segment_vertebrae
from osteo_node.pipeline.stages.volume import load_dicom_series, load_nifti
from osteo_node.pipeline.types import Volume
from tests.pipeline.ct.seg_reference import (
    TS_TOTAL,
    VERSE,
    LevelMetrics,
    centroid_lps,
    dice,
    level_metrics,
    reference_on,
    split,
)

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
    ref_vert = split(reference_on(vol, shared_data / TS / "example_ct_vertebrae.nii.gz"), TS_TOTAL)
    ref_body = split(reference_on(vol, shared_data / TS / "vertebrae_pp_refined.nii.gz"), VERSE)
    metrics = level_metrics(vol, seg.labels, bodies=seg.bodies, ref_vert=ref_vert,
                            ref_body=ref_body, min_ref_voxels=500)
    _report("example_ct (training fit)", seg, metrics)
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


def test_heldout_dicom_contrast_ct(model: Any, shared_data: Path) -> None:
    """20 contrast-enhanced slices around T11-T12 (another patient, another scanner)."""
    vol = load_dicom_series(shared_data / TS / "dicom").volume
    seg = segment_vertebrae(vol, model)
    ref = reference_on(vol, shared_data / TS / "dicom_seg_reference.nii.gz")
    ref_vert = split(ref, {32: "T12", 33: "T11"})
    metrics = level_metrics(vol, seg.labels, bodies=seg.bodies, ref_vert=ref_vert, ref_body={})
    _report("dicom 20 slices (held out)", seg, metrics)
    spine_ref = np.isin(ref, (32, 33))
    union = dice(seg.labels.array > 0, spine_ref)
    print(f"[dicom 20 slices (held out)] level-agnostic vertebra Dice {union:.3f}")
    assert union >= HELDOUT_DICOM_VERTEBRA_DICE
    # the named vertebrae sit on the reference vertebrae (instance separation works)
    for lv, v in seg.labels.levels.items():
        c = centroid_lps(vol, seg.labels.array == v)
        best = min(float(np.linalg.norm(c - centroid_lps(vol, m))) for m in ref_vert.values())
        print(f"[dicom 20 slices (held out)] {lv}: distance to nearest reference centroid "
              f"{best:.1f} mm")
    assert seg.labels.notes  # no anchor in 20 slices: the output must say so
    assert max(seg.labels.confidence.values(), default=0.0) < 0.5


def test_heldout_tptbox_crop(model: Any, shared_data: Path) -> None:
    """TPTBox crop (L2-L4, 1.5 mm, L3 complete) with vertebra and corpus masks."""
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
    # L3 (the complete vertebra): find the predicted body that overlaps it most
    l3_body = ref_body["L3"]
    values, counts = np.unique(seg.bodies.array[l3_body], return_counts=True)
    counts = counts[values > 0]
    values = values[values > 0]
    assert len(values) > 0, "no predicted body overlaps L3"
    best = int(values[np.argmax(counts)])
    d3 = dice(seg.bodies.array == best, l3_body)
    all_bodies = dice(seg.bodies.array > 0, np.isin(sub, (49, 50)) & (vert > 0))
    c_err = float(np.linalg.norm(centroid_lps(vol, seg.bodies.array == best)
                                 - centroid_lps(vol, l3_body)))
    print(f"[tptbox crop (held out)] L3 body Dice {d3:.3f} (instance {best}), body centroid "
          f"error {c_err:.1f} mm, level-agnostic body Dice {all_bodies:.3f}")
    assert d3 >= HELDOUT_TPTBOX_L3_BODY_DICE
    assert c_err <= 10.0
    assert max(seg.labels.confidence.values(), default=0.0) < 0.5  # no anchor in a crop


HELDOUT_DICOM_VERTEBRA_DICE = 0.5
HELDOUT_TPTBOX_L3_BODY_DICE = 0.5
