"""Evaluate the MR analyser on the fixed validation split (real manual vertebral-body masks).

For each validation volume the MR analyser (ONNX model, instance separation, levels, shared
heights/grades) runs on the NIfTI image; its bodies are scored against the manual masks
(Dice per body, found at Dice >= 0.5, heights vs the same height code on the manual masks,
levels). ``--thick 4`` first turns each 1 mm volume into 4 mm sagittal slabs (mean of 4 slices,
reference = the central slice), like a clinical sagittal series.

Usage (repo root):
    .venv/bin/python benchmarks/eval_mr.py [--thick 4] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from osteo_node.pipeline.mr.analyser import MRAnalyser  # noqa: E402
from osteo_node.pipeline.mr.evaluate import evaluate_nifti_case, summarise  # noqa: E402

SPLIT = REPO / "ai_models" / "mr_vertebral_bodies" / "split.json"


def thick_copy(image: Path, label: Path, thick: int, out_dir: Path) -> tuple[Path, Path]:
    """Average ``thick`` sagittal slices into one (array axis 0 is left-right here)."""
    img, lab = sitk.ReadImage(str(image), sitk.sitkFloat32), sitk.ReadImage(str(label))
    a, b = sitk.GetArrayFromImage(img), sitk.GetArrayFromImage(lab)
    direction = np.asarray(img.GetDirection()).reshape(3, 3)
    spacing = np.asarray(img.GetSpacing())
    lr_axis = int(np.argmax(np.abs(direction[0])))  # i, j or k most along LPS x
    arr_axis = 2 - lr_axis
    n = a.shape[arr_axis] // thick
    a = np.moveaxis(a, arr_axis, 0)[: n * thick]
    b = np.moveaxis(b, arr_axis, 0)[: n * thick]
    a_t = a.reshape(n, thick, *a.shape[1:]).mean(axis=1)
    b_t = b[thick // 2 :: thick][:n]
    a_t, b_t = np.moveaxis(a_t, 0, arr_axis), np.moveaxis(b_t, 0, arr_axis)
    new_spacing = spacing.copy()
    new_spacing[lr_axis] *= thick
    origin = (
        np.asarray(img.GetOrigin()) + direction[:, lr_axis] * spacing[lr_axis] * (thick - 1) / 2
    )
    paths = []
    for arr, name in ((a_t.astype(np.float32), "image"), (b_t, "label")):
        out = sitk.GetImageFromArray(np.ascontiguousarray(arr))
        out.SetSpacing(tuple(float(v) for v in new_spacing))
        out.SetOrigin(tuple(float(v) for v in origin))
        out.SetDirection(img.GetDirection())
        p = out_dir / f"{image.name.split('_image')[0]}_{name}_thick{thick}.nii.gz"
        sitk.WriteImage(out, str(p))
        paths.append(p)
    return paths[0], paths[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--data", type=Path, default=REPO.parent / "shared" / "data" / "mr" / "vertebral_bodies"
    )
    ap.add_argument("--cases", nargs="*", help="default: the validation split")
    ap.add_argument("--thick", type=int, default=1, help="simulate sagittal slabs of N mm")
    ap.add_argument("--out", type=Path, default=None, help="write per-case and summary JSON")
    ap.add_argument("--model-dir", type=Path, default=None)
    args = ap.parse_args(argv)
    cases = args.cases or json.loads(SPLIT.read_text())["val"]
    analyser = MRAnalyser(model_dir=args.model_dir)
    scores = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            image = args.data / f"{case}_image.nii.gz"
            label = args.data / f"{case}_label.nii.gz"
            if args.thick > 1:
                image, label = thick_copy(image, label, args.thick, Path(tmp))
            s = evaluate_nifti_case(analyser, case, image, label)
            if s is None:
                print(f"{case}: not analysed")
                continue
            scores.append(s)
            dices = " ".join(f"{b.dice:.3f}" for b in s.bodies)
            lv = " ".join(f"{b.predicted_level or '-'}" for b in s.bodies)
            print(
                f"{case}: {s.predicted_bodies} predicted, dice {dices} | levels {lv} "
                f"| {s.seconds:.1f}s",
                flush=True,
            )
    summary = summarise(scores)
    summary["thick_mm"] = args.thick
    print(json.dumps(summary, indent=1))
    if args.out:
        args.out.write_text(
            json.dumps({"summary": summary, "cases": [s.to_json() for s in scores]}, indent=1)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
