"""MR analysis time and peak memory for a 512 x 512 x 20 sagittal series on 2 CPU cores.

The series is built from a REAL MRI case of ../shared/data/mr/vertebral_bodies (1 mm volume ->
3 mm sagittal slabs, 20 slices, each resampled to 512 x 512 pixels of 0.6 mm, written as MR
Image Storage DICOM files). The analysis (header reading, selection, loading, ONNX inference,
instance separation, levels, heights, grades) runs in a fresh child process pinned to 2 cores;
its peak RSS is the child's ru_maxrss. Target: < 10 s per series.

Usage (repo root):  .venv/bin/python benchmarks/bench_mr.py [--case vb2_02] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

CHILD = r"""
import json, os, sys, time
from pathlib import Path
cores = sorted(os.sched_getaffinity(0))[:2]
os.sched_setaffinity(0, cores)
sys.path.insert(0, sys.argv[1])
t0 = time.perf_counter()
from osteo_node.pipeline.mr.analyser import MRAnalyser
a = MRAnalyser(threads=2)
_ = a.model
load_s = time.perf_counter() - t0
runs = []
for _ in range(int(sys.argv[3])):
    t = time.perf_counter()
    out = a.analyse([Path(sys.argv[2])])
    runs.append({"wall_s": round(time.perf_counter() - t, 3), "timings": out.result.timings_s,
                 "status": out.result.status, "reason": out.result.reason,
                 "levels": [v.level for v in out.result.vertebrae]})
print(json.dumps({"import_and_model_load_s": round(load_s, 3), "cores": cores, "runs": runs}))
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path,
                    default=REPO.parent / "shared" / "data" / "mr" / "vertebral_bodies")
    ap.add_argument("--case", default="vb2_02")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    from tests.pipeline.mr.dicom_series import sagittal_case, write_series

    case = sagittal_case(
        args.data / f"{args.case}_image.nii.gz", args.data / f"{args.case}_label.nii.gz",
        slab=3, shape_rc=(512, 512), pixel_mm=0.6, max_slices=20,
    )
    with tempfile.TemporaryDirectory() as tmp:
        write_series(case, Path(tmp))
        n = len(os.listdir(tmp))
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, str(REPO), tmp, str(args.repeats)],
            capture_output=True, text=True, check=False,
        )
    if proc.returncode != 0:
        print(proc.stderr, file=sys.stderr)
        return 1
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    walls = sorted(r["wall_s"] for r in result["runs"])
    print(f"series: {args.case} -> {n} sagittal MR instances of 512x512 "
          f"(0.6 mm pixels, {case.slice_mm:g} mm slices)")
    print(f"cores: {result['cores']}; import + model load: {result['import_and_model_load_s']} s")
    for r in result["runs"]:
        print(f"run: {r['wall_s']} s  status={r['status']} levels={r['levels']}  "
              f"stages={r['timings']}")
    print(f"analysis time: median {walls[len(walls) // 2]:.2f} s, min {walls[0]:.2f} s "
          f"(target < 10 s); peak RSS of the analysing process: {peak_mib:.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
