"""Measure the shipped CT vertebra model on the real labelled cases (fills model_card.md).

    .venv/bin/python ai_models/ct_vertebrae/evaluate.py [--data ../shared/data] [--model DIR]

Prints a markdown table per case: per reference vertebra the predicted level at that place,
centroid error (mm, LPS), whole-vertebra Dice and body Dice on the INPUT grid, plus
level-agnostic Dice (all vertebrae / all bodies together) and the segment-stage run time.
example_ct body reference: vertebrae_body == 1 inside each reference vertebra (the training
target); the tighter vertebrae_pp_refined bodies are reported in an extra column.
example_ct is a training volume (training fit), and so is the 20-slice DICOM slab since 1.3.0
(its body reference is the training target, see prepare_data.py); the TPTBox crop is held out.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from prepare_data import BODY, SLAB_BODY_T11, slab_native_targets  # noqa: E402

from osteo_node.models import default_ct_model_dir, load_model  # noqa: E402
from osteo_node.pipeline.ct.levels import segment_vertebrae  # noqa: E402
from osteo_node.pipeline.ct.references import (  # noqa: E402
    TS_TOTAL,
    VERSE,
    centroid_lps,
    example_body_reference,
    reference_on,
    split,
)
from osteo_node.pipeline.metrics import dice  # noqa: E402
from osteo_node.pipeline.stages.volume import load_dicom_series, load_nifti  # noqa: E402
from osteo_node.pipeline.types import Volume  # noqa: E402


def _case(name: str, vol: Volume, model, ref_vert, ref_body,  # type: ignore[no-untyped-def]
          *, ref_body2=None) -> None:
    t0 = time.perf_counter()
    seg = segment_vertebrae(vol, model)
    dt = time.perf_counter() - t0
    print(f"\n### {name}\n")
    print(f"levels found: {seg.labels.levels}; anchor: {seg.anchor}; "
          f"confidence: {seg.labels.confidence}; segment stage {dt:.1f} s "
          f"({seg.model.execution_provider})\n")
    extra = " | body Dice (pp_refined) |" if ref_body2 else " |"
    print("| reference | predicted level there | centroid error mm | vertebra Dice | body Dice"
          + extra)
    print("|---|---|---|---|---|" + ("---|" if ref_body2 else ""))
    value_to_level = {v: k for k, v in seg.labels.levels.items()}
    for level, ref in ref_vert.items():
        values, counts = np.unique(seg.labels.array[ref], return_counts=True)
        keep = values > 0
        if not keep.any():
            print(f"| {level} | (none) | - | 0.00 | - |")
            continue
        v = int(values[keep][np.argmax(counts[keep])])
        pred = seg.labels.array == v
        pc, rc = centroid_lps(pred, vol.geometry), centroid_lps(ref, vol.geometry)
        assert pc is not None and rc is not None  # both masks are non-empty here
        err = float(np.linalg.norm(pc - rc))
        bd = "-"
        if level in ref_body:
            bd = f"{dice(seg.bodies.array == v, ref_body[level], 1.0):.2f}"
        bd2 = ""
        if ref_body2:
            bd2 = f" {dice(seg.bodies.array == v, ref_body2[level], 1.0):.2f} |" \
                if level in ref_body2 else " - |"
        print(f"| {level} | {value_to_level.get(v, '?')} | {err:.1f} | "
              f"{dice(pred, ref, 1.0):.2f} | {bd} |{bd2}")
    all_ref = np.zeros(vol.array.shape, dtype=bool)
    for m in ref_vert.values():
        all_ref |= m
    line = f"\nlevel-agnostic vertebra Dice {dice(seg.labels.array > 0, all_ref, 1.0):.3f}"
    if ref_body:
        all_body = np.zeros(vol.array.shape, dtype=bool)
        for m in ref_body.values():
            all_body |= m
        line += f", body Dice {dice(seg.bodies.array > 0, all_body, 1.0):.3f}"
    print(line)
    print(f"notes: {seg.labels.notes}")


def main() -> int:
    ap = argparse.ArgumentParser(description="evaluate the CT vertebra model on real cases")
    ap.add_argument("--data", type=Path, default=HERE.parents[1].parent / "shared" / "data")
    ap.add_argument("--model", type=Path, default=default_ct_model_dir())
    args = ap.parse_args()
    model = load_model(args.model, threads=2)
    ts = args.data / "ct" / "totalseg_example"

    vol = load_nifti(ts / "example_ct.nii.gz").volume
    vert = reference_on(vol, ts / "example_ct_vertebrae.nii.gz")
    rv = split(vert, TS_TOTAL)
    rv = {k: v for k, v in rv.items() if v.sum() >= 500}  # T11 is a 76-voxel sliver
    rb = example_body_reference(reference_on(vol, ts / "vertebrae_body.nii.gz"), vert)
    rb2 = split(reference_on(vol, ts / "vertebrae_pp_refined.nii.gz"), VERSE)
    _case("example_ct (TRAINING volume: training fit)", vol, model, rv, rb, ref_body2=rb2)

    vol = load_dicom_series(ts / "dicom").volume
    ref = reference_on(vol, ts / "dicom_seg_reference.nii.gz")
    rv = split(ref, {32: "T12", 33: "T11"})
    # body reference: the training target (reference outline, body/disc slices read by eye)
    body = slab_native_targets(ref) == BODY
    rb = {"T12": body & (np.arange(body.shape[0]) < SLAB_BODY_T11.start)[:, None, None],
          "T11": body & (np.arange(body.shape[0]) >= SLAB_BODY_T11.start)[:, None, None]}
    _case("20 DICOM slices, contrast CT (TRAINING volume since 1.3.0: training fit)", vol,
          model, rv, rb)

    tp = args.data / "ct" / "tptbox_sample"
    vol = load_nifti(tp / "sub-ct_label-22_ct.nii.gz").volume
    vert = reference_on(vol, tp / "sub-ct_seg-vert_label-22_msk.nii.gz")
    sub = reference_on(vol, tp / "sub-ct_seg-subreg_label-22_msk.nii.gz")
    names = {21: "L2", 22: "L3", 23: "L4"}
    rv = split(vert, names)
    rb = {n: (vert == v) & np.isin(sub, (49, 50)) for v, n in names.items()}
    _case("TPTBox crop L2-L4 (held out)", vol, model, rv, rb)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
