"""Trabecular HU of a labelled case's reference bodies at depth: the mean and median HU of the
voxels at least 3, 6 and 9 mm inside each reference body (reference labels only, no model).

A check of the density readings of ``osteo-node evaluate`` that does not depend on how an
outline's ROI is drawn (used in ai_models/ct_sagittal/model_card.md, v4 recipe):

    .venv/bin/python benchmarks/deep_core_hu.py s0009 L1 L2 L3
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

from osteo_node.pipeline.ct.evaluation import load_cases, reference_bodies
from osteo_node.pipeline.ct.references import reference_label_volume
from osteo_node.pipeline.stages.volume import load_volume

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("case", help="case name in benchmarks/ct_cases.yaml")
    ap.add_argument("levels", nargs="+")
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    args = ap.parse_args(argv)
    cases = load_cases(REPO / "benchmarks" / "ct_cases.yaml", args.data)
    case = next((c for c in cases if c.name == args.case), None)
    if case is None:
        print(f"no case {args.case!r}", file=sys.stderr)
        return 2
    volume = load_volume(case.input)
    ref = reference_label_volume(case.reference.vertebrae, case.reference.numbering,
                                 volume.geometry, volume.array.shape)
    bodies, _ = reference_bodies(case.reference, volume, ref)
    spacing_kji = np.asarray(volume.geometry.spacing)[::-1]
    for level in args.levels:
        body = (ref.array == ref.levels[level]) & bodies
        depth = ndimage.distance_transform_edt(body, sampling=spacing_kji)
        for mm in (3.0, 6.0, 9.0):
            core = depth >= mm
            if core.any():
                hu = volume.array[core]
                print(f"{args.case} {level} >= {mm:g} mm: {int(core.sum())} voxels, mean "
                      f"{float(hu.mean()):.1f} HU, median {float(np.median(hu)):.1f} HU")
            else:
                print(f"{args.case} {level} >= {mm:g} mm: no voxel")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
