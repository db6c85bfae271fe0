"""CT analysis speed and memory benchmark (issue 2, acceptance 5).

Builds a 512x512xN DICOM series by resampling the REAL TotalSegmentator example CT
(../shared/data/ct/totalseg_example/example_ct.nii.gz, 3 mm) onto a 1 mm in-plane grid
(512 mm field of view, air outside the scan) with N slices: 300 slices at 1 mm, and for the
memory target 800 slices (the same 336 mm of anatomy at 0.42 mm, a thin-slice reconstruction).
Slices are written as uncompressed CT Image Storage files (header of a real Philips CT from
../shared/data/ct/chest_ct_series as template) into a temporary folder.

Each measurement runs in a fresh child process; it prints the time to read the series
(headers + pixels into the float32 volume), the time of the whole analysis (select -> volume ->
segment -> measure -> phase -> grade), their ratio and the child's peak RSS.
Targets on 2 CPU cores: analysis <= 10x read and < 20 s for 300 slices; peak RSS <= 2 GB for
800 slices.

    .venv/bin/python benchmarks/bench_ct.py [--slices 300 800] [--keep DIR]
        [--reference-segmentation]  # measure without the model (reference labels injected)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("OSTEO_SHARED_DATA", REPO.parent / "shared" / "data"))
EXAMPLE = DATA / "ct/totalseg_example/example_ct.nii.gz"
REFERENCE = DATA / "ct/totalseg_example/vertebrae_pp_refined.nii.gz"
BODIES = DATA / "ct/totalseg_example/vertebrae_body.nii.gz"
TEMPLATE_DIR = DATA / "ct/chest_ct_series/dicom"


def build_series(out: Path, n_slices: int) -> float:
    """Resample the example CT to 512x512xn (1 mm in-plane) and write DICOM; returns spacing."""
    import numpy as np
    import pydicom
    import SimpleITK as sitk
    from pydicom.uid import generate_uid

    src = sitk.ReadImage(str(EXAMPLE), sitk.sitkFloat32)
    size = np.array(src.GetSize()) * np.array(src.GetSpacing())
    lo = np.array(src.TransformContinuousIndexToPhysicalPoint([-0.5, -0.5, -0.5]))
    hi = np.array(src.TransformContinuousIndexToPhysicalPoint(
        [s - 0.5 for s in src.GetSize()]))
    centre = (lo + hi) / 2.0
    z_extent = float(size[2])
    dz = min(1.0, z_extent / n_slices)
    origin = (centre[0] - 255.5, centre[1] - 255.5, centre[2] - dz * (n_slices - 1) / 2.0)
    ref = sitk.Image(512, 512, n_slices, sitk.sitkFloat32)
    ref.SetSpacing((1.0, 1.0, dz))
    ref.SetOrigin(origin)
    template = pydicom.dcmread(sorted(TEMPLATE_DIR.iterdir())[0])
    study, series = generate_uid(), generate_uid()
    out.mkdir(parents=True, exist_ok=True)
    chunk = 50  # resample in slabs to keep this builder's memory small
    for k0 in range(0, n_slices, chunk):
        n = min(chunk, n_slices - k0)
        slab = sitk.Image(512, 512, n, sitk.sitkFloat32)
        slab.SetSpacing((1.0, 1.0, dz))
        slab.SetOrigin((origin[0], origin[1], origin[2] + k0 * dz))
        img = sitk.Resample(src, slab, sitk.Transform(), sitk.sitkLinear, -1024.0)
        arr = sitk.GetArrayFromImage(img)
        for k in range(n):
            ds = template.copy()
            z = origin[2] + (k0 + k) * dz
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
            ds.SOPInstanceUID = generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.InstanceNumber = k0 + k + 1
            ds.ImagePositionPatient = [round(origin[0], 4), round(origin[1], 4), round(z, 4)]
            ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
            ds.SliceLocation = round(z, 4)
            ds.PixelSpacing = [1.0, 1.0]
            ds.SliceThickness = round(max(dz, 1.0), 3)
            ds.SpacingBetweenSlices = round(dz, 4)
            ds.Rows, ds.Columns = 512, 512
            ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
            pixels = np.clip(np.round(arr[k] + 1024.0), 0, 65535).astype(np.uint16)
            ds.PixelData = pixels.tobytes()
            ds.save_as(out / f"IM{k0 + k:05d}", enforce_file_format=True)
    return dz


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM; unlike ru_maxrss it is not inherited from the
    parent across fork/exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def child(mode: str, folder: Path, reference: bool) -> None:
    """Runs in a fresh process: read only, or the whole analysis; prints JSON."""
    t0 = time.perf_counter()
    if mode == "read":
        from osteo_node.pipeline.stages.volume import list_files, load_dicom, read_headers

        headers, _ = read_headers(list_files(folder))
        volume = load_dicom(headers).volume
        info = {"shape": list(volume.array.shape)}
    else:
        from osteo_node.pipeline.ct.analyser import CTAnalyser
        from osteo_node.pipeline.ct.evaluation import ReferenceSpec, reference_segment_fn

        segment = reference_segment_fn(ReferenceSpec(REFERENCE, "verse", BODIES, (1,))) \
            if reference else None
        out = CTAnalyser(segment=segment).analyse([folder])
        r = out.result
        info = {"status": r.status, "reason": r.reason, "timings_s": r.timings_s,
                "levels": [v.level for v in r.vertebrae],
                "model": None if r.model is None else r.model.execution_provider}
    elapsed = time.perf_counter() - t0
    rss_mb = peak_rss_mb()
    print(json.dumps({"seconds": elapsed, "peak_rss_mb": rss_mb, **info}))


def run_child(mode: str, folder: Path, reference: bool) -> dict[str, object]:
    cmd = [sys.executable, __file__, "--child", mode, str(folder)]
    if reference:
        cmd.append("--reference-segmentation")
    env = {**os.environ, "OSTEO_LOG_LEVEL": "WARNING"}
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--slices", type=int, nargs="+", default=[300, 800])
    p.add_argument("--keep", type=Path, help="build the series here and keep them")
    p.add_argument("--reference-segmentation", action="store_true")
    p.add_argument("--child", nargs=2, metavar=("MODE", "DIR"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]), args.reference_segmentation)
        return 0
    if not EXAMPLE.is_file():
        print(f"real data not found: {EXAMPLE}", file=sys.stderr)
        return 2
    print(f"CPU cores available: {len(os.sched_getaffinity(0))}")
    with tempfile.TemporaryDirectory(prefix="bench_ct_") as tmp:
        base = args.keep or Path(tmp)
        for n in args.slices:
            folder = base / f"ct_{n}"
            if not folder.is_dir() or len(list(folder.iterdir())) != n:
                t0 = time.perf_counter()
                dz = build_series(folder, n)
                print(f"built 512x512x{n} series (slice spacing {dz:.3f} mm) in "
                      f"{time.perf_counter() - t0:.1f} s at {folder}")
            read = run_child("read", folder, args.reference_segmentation)
            full = run_child("analyse", folder, args.reference_segmentation)
            ratio = float(full["seconds"]) / float(read["seconds"])  # type: ignore[arg-type]
            seg = "reference labels (no model)" if args.reference_segmentation else \
                f"model ({full.get('model')})"
            print(f"512x512x{n}: read {read['seconds']:.2f} s (peak RSS "
                  f"{read['peak_rss_mb']:.0f} MB); analysis {full['seconds']:.2f} s, "
                  f"ratio {ratio:.1f}x, peak RSS {full['peak_rss_mb']:.0f} MB; segmentation: "
                  f"{seg}; status {full['status']} {full.get('reason') or ''}")
            print(f"  stage timings: {full['timings_s']}")
            print(f"  levels: {full['levels']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
