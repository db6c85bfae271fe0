"""``osteo-node evaluate-mr [--cases ...] [--thick N] [--json OUT]``.

Runs the MR analyser on the held-out validation volumes of ``ai_models/mr_vertebral_bodies/
split.json`` (real sagittal lumbar MRI with manual vertebral-body masks in
``<shared data>/mr/vertebral_bodies``) and prints per case and overall: Dice per body, bodies
found (Dice >= 0.5), heights vs heights measured the same way on the manual masks, level names.
``--thick 4`` first averages 4 slices into 4 mm sagittal slabs (like a clinical series);
``--intensity`` applies an intensity stress transform (linear rescale, gamma, inversion).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SPLIT = REPO / "ai_models" / "mr_vertebral_bodies" / "split.json"


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "evaluate-mr", help="score the MR analyser on the held-out manual MRI masks",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", type=Path, default=None,
                   help="shared data folder (default $OSTEO_SHARED_DATA or ../shared/data)")
    p.add_argument("--cases", nargs="*", default=None, help="case names (default: validation)")
    p.add_argument("--thick", type=int, default=1, help="simulate sagittal slabs of N mm")
    p.add_argument("--intensity", default=None,
                   choices=("scale", "gamma0.5", "gamma2", "invert"),
                   help="stress test: transform the image intensities first")
    p.add_argument("--model-dir", type=Path, default=None)
    p.add_argument("--json", type=Path, dest="json_out", help="also write the scores as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from osteo_node.pipeline.mr.analyser import MRAnalyser
    from osteo_node.pipeline.mr.evaluate import (
        evaluate_nifti_case,
        intensity_copy,
        summarise,
        thick_slab_copy,
    )

    root = args.data or Path(os.environ.get("OSTEO_SHARED_DATA", REPO.parent / "shared" / "data"))
    folder = root.resolve() / "mr" / "vertebral_bodies"
    if not folder.is_dir():
        print(f"error: {folder} not found", file=sys.stderr)
        return 2
    cases = args.cases or json.loads(SPLIT.read_text(encoding="utf-8"))["val"]
    analyser = MRAnalyser(model_dir=args.model_dir)
    scores = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            image, label = folder / f"{case}_image.nii.gz", folder / f"{case}_label.nii.gz"
            if not image.is_file() or not label.is_file():
                print(f"{case}: image or label missing, skipped", file=sys.stderr)
                continue
            if args.intensity:
                image = intensity_copy(image, args.intensity, Path(tmp))
            if args.thick > 1:
                image, label = thick_slab_copy(image, label, args.thick, Path(tmp))
            score = evaluate_nifti_case(analyser, case, image, label)
            if score is None:
                print(f"{case}: not analysed", file=sys.stderr)
                continue
            scores.append(score)
            dices = " ".join(f"{b.dice:.3f}" for b in score.bodies)
            levels = " ".join(b.predicted_level or "-" for b in score.bodies)
            print(f"{case:8} bodies {score.predicted_bodies}  dice {dices}  levels {levels}  "
                  f"{score.seconds:.1f}s", flush=True)
    summary = summarise(scores)
    summary["thick_mm"] = args.thick
    summary["intensity"] = args.intensity
    print(json.dumps(summary, indent=1))
    if args.json_out:
        args.json_out.write_text(json.dumps(
            {"summary": summary, "cases": [s.to_json() for s in scores]}, indent=1
        ) + "\n")
    return 0 if scores else 1
