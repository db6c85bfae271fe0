"""Ingest benchmark: 300 synthetic 512x512 int16 CT slices (~150 MB) sent by dcmtk storescu to

  (a) the node's listener with its full durable path (validate, write + fsync into a
      pre-created durable slot, file it with link + unlink, then index it in SQLite, WAL with
      synchronous=NORMAL: the spool file is the durable record and start-up reconciles the index
      from it; see osteo_node/store/spool.py),
  (b) a minimal pynetdicom SCP that receives and discards,
  (c) dcmtk storescp (writes files, no fsync),

each in its own process, in the same run (interleaved, ``--repeat`` times; medians reported,
because a shared machine's disk latency varies a lot); then 4 concurrent storescu senders (75
slices each) to the node, checking that all 300 instances are indexed and on disk.

    .venv/bin/python benchmarks/bench_ingest.py [--slices 300] [--repeat 3] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

REPO = Path(__file__).resolve().parents[1]
CALLER, AE = "BENCH", "OSTEO_NODE"


def make_slices(folder: Path, n: int) -> list[Path]:
    """``n`` CT slices of one series: a smooth phantom plus noise, int16, explicit VR LE."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[-256:256, -256:256]
    body = ((xx / 200.0) ** 2 + (yy / 150.0) ** 2 < 1).astype(np.int16)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    paths = []
    for i in range(n):
        img = (body * (40 + 1000 * ((xx - 20 * np.sin(i / 9)) ** 2 + yy**2 < 900)) - 1000
               + rng.normal(0, 12, body.shape)).astype(np.int16)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality, ds.PatientID, ds.PatientName = "CT", "BENCH", "Bench^Synthetic"
        ds.InstanceNumber, ds.ImagePositionPatient = i + 1, [-250.0, -250.0, -1.0 * i]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing, ds.SliceThickness = [0.977, 0.977], 1.0
        ds.Rows, ds.Columns, ds.SamplesPerPixel = 512, 512, 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = 0, 1
        ds.PixelData = img.tobytes()
        p = folder / f"{i:04d}.dcm"
        ds.save_as(p, enforce_file_format=True)
        paths.append(p)
    return paths


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        r = subprocess.run(["echoscu", "-aet", CALLER, "-aec", AE, "127.0.0.1", str(port)],
                           capture_output=True, check=False)
        if r.returncode == 0:
            return
        time.sleep(0.1)
    raise RuntimeError("server did not start")


NODE = textwrap.dedent("""
    import sys, threading, signal
    from pathlib import Path
    from osteo_node.config import settings_from_mapping
    from osteo_node.node.listener import run_listener
    work, port = Path(sys.argv[1]), int(sys.argv[2])
    s = settings_from_mapping({
        "dicom": {"port": port, "allowed_callers": ["BENCH"], "max_associations": 16},
        "storage": {"spool_dir": str(work / "spool"),
                    "database_url": f"sqlite:///{work / 'node.db'}"},
        "logging": {"level": "WARNING"}}, work)
    from osteo_node import logging_setup
    logging_setup.configure("WARNING", json=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    run_listener(s, stop)
""")

DISCARD = textwrap.dedent("""
    import sys, threading, signal
    from pynetdicom import AE, evt, AllStoragePresentationContexts
    from pynetdicom.sop_class import Verification
    ae = AE(ae_title="OSTEO_NODE")
    ae.supported_contexts = AllStoragePresentationContexts
    ae.add_supported_context(Verification)
    srv = ae.start_server(("127.0.0.1", int(sys.argv[2])), block=False,
                          evt_handlers=[(evt.EVT_C_STORE, lambda e: 0x0000)])
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    srv.shutdown()
""")


def start_python(code: str, work: Path, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", code, str(work), str(port)], cwd=REPO)


def start_storescp(work: Path, port: int) -> subprocess.Popen[bytes]:
    (work / "out").mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(["storescp", "-aet", AE, "-od", str(work / "out"), str(port)])


def send(port: int, files: list[Path]) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(["storescu", "-aet", CALLER, "-aec", AE, "127.0.0.1", str(port),
                        *map(str, files)], capture_output=True, text=True, check=False)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"storescu failed: {r.stderr[-1000:]}")
    return dt


def send_concurrently(port: int, groups: list[list[Path]]) -> float:
    t0 = time.perf_counter()
    procs = [subprocess.Popen(["storescu", "-aet", CALLER, "-aec", AE, "127.0.0.1", str(port),
                               *map(str, g)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE) for g in groups]
    errors = [p.communicate()[1] for p in procs if p.wait() != 0 or False]
    dt = time.perf_counter() - t0
    if any(p.returncode != 0 for p in procs):
        raise RuntimeError(f"a sender failed: {errors}")
    return dt


def run_one(kind: str, work: Path, files: list[Path]) -> float:
    port = free_port()
    work.mkdir(parents=True, exist_ok=True)
    proc = {"node": lambda: start_python(NODE, work, port),
            "discard": lambda: start_python(DISCARD, work, port),
            "storescp": lambda: start_storescp(work, port)}[kind]()
    try:
        wait_listening(port, proc)
        return send(port, files)
    finally:
        proc.terminate()
        proc.wait(30)


def fsync_floor(files: list[Path], folder: Path) -> float:
    """Seconds to write and fsync each slice as its own file, one after the other: the least
    any server that acknowledges only durable instances must add to (b)."""
    folder.mkdir(parents=True, exist_ok=True)
    blobs = [f.read_bytes() for f in files]
    t0 = time.perf_counter()
    for i, blob in enumerate(blobs):
        fd = os.open(folder / f"{i}.dcm", os.O_WRONLY | os.O_CREAT, 0o640)
        try:
            os.write(fd, blob)
            os.fsync(fd)
        finally:
            os.close(fd)
    dt = time.perf_counter() - t0
    shutil.rmtree(folder, ignore_errors=True)
    return dt


def indexed(db: Path) -> int:
    from sqlalchemy import func, select

    from osteo_node.store.db import make_engine
    from osteo_node.store.index import instances

    engine = make_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(instances)).scalar_one())


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--repeat", type=int, default=3, help="runs of (a) and (b); medians")
    ap.add_argument("--repeat-storescp", action="store_true", help="repeat (c) too (slow)")
    ap.add_argument("--keep", type=Path, help="work folder to keep (default: a temp folder)")
    return ap.parse_args()


def sequential_runs(args: argparse.Namespace, root: Path, files: list[Path],
                    mb: float) -> dict[str, list[float]]:
    """(a), (b), (c) one sender at a time, interleaved; seconds per run of each kind."""
    runs: dict[str, list[float]] = {"discard": [], "node": [], "storescp": []}
    for r in range(args.repeat):  # interleaved, so a load change hits all three alike
        for kind, times in runs.items():
            if kind == "storescp" and r > 0 and not args.repeat_storescp:
                continue
            work = root / f"{kind}{r}"
            dt = run_one(kind, work, files)
            times.append(dt)
            print(f"  run {r + 1} {kind:<9} {dt:6.2f} s  ({mb / dt:6.0f} MB/s)")
            if kind == "node":
                n_node = indexed(work / "node.db")
                assert n_node == len(files), f"node indexed {n_node} of {len(files)}"
            shutil.rmtree(work, ignore_errors=True)
    return runs


def print_medians(repeat: int, runs: dict[str, list[float]], floors: list[float]) -> None:
    a, b, c = (statistics.median(runs[k]) for k in ("node", "discard", "storescp"))
    floor = statistics.median(floors)
    print(f"medians of {repeat} run(s):")
    print(f"(a) node, durable      {a:6.2f} s")
    print(f"(b) pynetdicom discard {b:6.2f} s")
    print(f"(c) dcmtk storescp     {c:6.2f} s")
    print(f"(d) write+fsync only  {floor:6.2f} s  (the floor a durable server adds to b)")
    print(f"ratio a/b = {a / b:.2f} (target <= 1.5), a/c = {a / c:.2f}; "
          f"best-case a/b = {min(runs['node']) / min(runs['discard']):.2f}; "
          f"a - b = {a - b:.2f} s, of which fsync floor {floor:.2f} s")


def concurrent_senders(root: Path, files: list[Path]) -> int:
    """4 concurrent senders to a fresh node; 0 when nothing is lost, else 1."""
    work, port = root / "node4", free_port()
    work.mkdir()
    proc = start_python(NODE, work, port)
    try:
        wait_listening(port, proc)
        groups = [files[i::4] for i in range(4)]
        # New UIDs are not needed: a fresh node; each sender has a disjoint quarter.
        dt = send_concurrently(port, groups)
    finally:
        proc.terminate()
        proc.wait(30)
    n = indexed(work / "node.db")
    on_disk = sum(1 for _ in (work / "spool").rglob("*.dcm"))
    print(f"4 concurrent senders: {dt:.2f} s, indexed {n}/{len(files)}, files {on_disk}"
          f" -> {'nothing lost' if n == on_disk == len(files) else 'LOST INSTANCES'}")
    return 0 if n == on_disk == len(files) else 1


def main() -> int:
    args = parse_args()
    for tool in ("storescu", "storescp", "echoscu"):
        if shutil.which(tool) is None:
            print(f"{tool} (dcmtk) is needed", file=sys.stderr)
            return 2
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench_ingest_"))
    try:
        t0 = time.perf_counter()
        files = make_slices(root / "slices", args.slices)
        mb = sum(f.stat().st_size for f in files) / 1e6
        print(f"generated {len(files)} slices, {mb:.0f} MB in {time.perf_counter() - t0:.1f} s")
        runs = sequential_runs(args, root, files, mb)
        floors = [fsync_floor(files, root / f"floor{r}") for r in range(args.repeat)]
        print(f"  write+fsync of each slice alone: {', '.join(f'{x:.2f}' for x in floors)} s")
        print_medians(args.repeat, runs, floors)
        return concurrent_senders(root, files)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)

if __name__ == "__main__":
    sys.exit(main())
