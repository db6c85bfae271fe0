"""Regenerate ``golden_example_ct.json`` after retraining the CT model on purpose.

    .venv/bin/python -m tests.pipeline.ct.make_golden [--data ../shared/data]

Runs the shipped model on the real example CT and writes, per level, the label value, level
confidence, centroid (LPS mm), body and vertebra volume; prints old vs new for review. The golden
test (test_levels_real.py) then guards against unintended changes of the labelling chain.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from osteo_node.models import default_ct_model_dir, load_model
from osteo_node.pipeline.ct.levels import segment_vertebrae
from osteo_node.pipeline.ct.references import centroid_lps
from osteo_node.pipeline.stages.volume import load_nifti

GOLDEN = Path(__file__).with_name("golden_example_ct.json")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    args = ap.parse_args(argv)
    model = load_model(default_ct_model_dir())
    vol = load_nifti(args.data / "ct/totalseg_example/example_ct.nii.gz").volume
    seg = segment_vertebrae(vol, model)
    voxel_ml = float(np.prod(vol.geometry.spacing)) / 1000.0
    old = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {"levels": {}}
    out: dict[str, object] = {"model_sha256": model.manifest.sha256, "levels": {}}
    levels: dict[str, object] = {}
    for level, value in seg.labels.levels.items():
        centroid = centroid_lps(seg.labels.array == value, vol.geometry)
        levels[level] = {
            "value": value, "confidence": seg.labels.confidence[level],
            "centroid_lps_mm": [round(float(x), 1) for x in (centroid if centroid is not None
                                                            else ())],
            "body_ml": round(float((seg.bodies.array == value).sum()) * voxel_ml, 1),
            "vertebra_ml": round(float((seg.labels.array == value).sum()) * voxel_ml, 1),
        }
        print(level, old["levels"].get(level), levels[level])
    out["levels"] = levels
    GOLDEN.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
