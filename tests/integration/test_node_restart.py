"""``osteo-node serve`` as a real process: a complete series becomes one job; kill -9 during a
transfer and during a job loses nothing that was acknowledged and completes each job once.

Acceptance point 2 of issue 6. The analyser is a test fake injected through the ``analysers``
setting (the analysis is not what these tests are about); it records starts and finishes in
marker files.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from sqlalchemy import func, select

from osteo_node.outbox.tables import outbox_items
from osteo_node.queue.jobs import jobs
from osteo_node.store.db import make_engine
from osteo_node.store.index import instances, series
from tests.node.support import (
    AE,
    CALLER,
    NodeProcess,
    StoreOutcome,
    echoscu,
    fill_uids,
    free_port,
    node_config,
    parse_acknowledged,
    storescu,
    synth_series,
    wait_until,
    write_config,
)

# the fake analysers (tests.node.fake_analysers) end with a refusal: that job state
FAKE_FINAL = "not_analysable"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk not installed"),
]


class Node:
    def __init__(self, tmp: Path, analyser: str, publisher: str = "no_objects",
                 **sections: Any) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.markers = tmp / "markers"
        self.markers.mkdir(parents=True)
        cfg = node_config(tmp, self.port, analysers={"CT": f"tests.node.fake_analysers:{analyser}"},
                          publisher=f"tests.node.fake_analysers:{publisher}", **sections)
        self.proc = NodeProcess(write_config(tmp, cfg), tmp / "node.log",
                                env={"OSTEO_TEST_ANALYSER_DIR": str(self.markers)})
        self.engine = make_engine(f"sqlite:///{tmp / 'node.db'}")

    def scalar(self, stmt: Any) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(stmt).scalar_one()

    def rows(self, stmt: Any) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(stmt).all())

    def indexed(self) -> int:
        try:
            return int(self.scalar(select(func.count()).select_from(instances)))
        except Exception:  # noqa: BLE001 - tables may not exist yet while the node starts
            return 0

    def job_rows(self) -> list[Any]:
        return self.rows(select(jobs.c.series_id, jobs.c.generation, jobs.c.state,
                                jobs.c.attempts, jobs.c.instance_count).order_by(jobs.c.id))

    def markers_named(self, prefix: str) -> list[Path]:
        return sorted(self.markers.glob(f"{prefix}-*"))

    def log(self) -> str:
        return (self.tmp / "node.log").read_text(errors="replace")


@pytest.fixture
def chest_files(shared_data: Path) -> list[Path]:
    return sorted((shared_data / "ct/chest_ct_series/dicom").glob("*.dcm"))


def test_complete_chest_series_is_one_series_and_one_job(tmp_path: Path,
                                                         chest_files: list[Path]) -> None:
    assert len(chest_files) == 141
    node = Node(tmp_path, "recording")
    node.proc.start(node.port)
    try:
        out = storescu(node.port, chest_files)
        assert out.returncode == 0, out.output[-2000:]
        assert len(out.acknowledged) == 141
        wait_until(lambda: [r for r in node.job_rows() if r.state == FAKE_FINAL], 60,
                   what="job done")
        assert node.scalar(select(func.count()).select_from(series)) == 1
        assert node.indexed() == 141
        rows = node.job_rows()
        assert len(rows) == 1 and rows[0].state == FAKE_FINAL and rows[0].instance_count == 141
        finished = node.markers_named("finished")
        assert len(finished) == 1 and finished[0].read_text() == "141"
        status = subprocess.run(
            ["osteo-node" if shutil.which("osteo-node") else str(Path(
                __import__("sys").executable).parent / "osteo-node"),
             "status", "--config", str(node.proc.config), "--json"],
            capture_output=True, text=True, check=True)
        assert '"instances": 141' in status.stdout and '"not_analysable": 1' in status.stdout
    finally:
        assert node.proc.stop() == 0


def _storescu_background(port: int, files: list[Path], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as f:
        return subprocess.Popen(
            ["storescu", "-v", "-aet", CALLER, "-aec", AE, "127.0.0.1", str(port),
             *map(str, files)], stdout=f, stderr=subprocess.STDOUT)


def test_kill9_during_300_slice_transfer(tmp_path: Path, chest_files: list[Path]) -> None:
    files = synth_series(chest_files, tmp_path / "sent", 300)
    node = Node(tmp_path / "node", "recording")
    node.proc.start(node.port)
    sender_log = tmp_path / "storescu.log"
    sender = _storescu_background(node.port, files, sender_log)
    wait_until(lambda: node.indexed() >= 100, 120, what="100 instances indexed")
    node.proc.kill9()  # the whole process group, like a power cut of the node
    sender.wait(60)
    sent_log = sender_log.read_text(errors="replace")
    acked = parse_acknowledged(sent_log)
    assert 100 <= len(acked) < 300, sent_log[-2000:]  # the transfer was cut

    node.proc.start(node.port)
    try:
        spool = tmp_path / "node" / "spool"
        # Start-up recovery filed or emptied every slot: no partial file anywhere.
        # (the listener's slots are in .slots/<node.name>)
        assert all(p.stat().st_size == 0 for p in (spool / ".slots").rglob("*")
                   if p.is_file())
        indexed = {r[0] for r in node.rows(select(instances.c.sop_instance_uid))}
        for f in acked:
            ds = dcmread(f, stop_before_pixels=True)
            path = spool / ds.StudyInstanceUID / ds.SeriesInstanceUID / f"{ds.SOPInstanceUID}.dcm"
            assert path.is_file(), f"acknowledged {f.name} lost"
            assert ds.SOPInstanceUID in indexed, f"acknowledged {f.name} not indexed"
            assert dcmread(path).PixelData == dcmread(f).PixelData
        n_first = len(indexed)
        # The partial series completes (quiet time) and its job runs exactly once.
        wait_until(lambda: [r for r in node.job_rows() if r.state == FAKE_FINAL], 60,
                   what="job for the partial series")
        assert [(r.generation, r.state, r.instance_count) for r in node.job_rows()] == \
            [(1, FAKE_FINAL, n_first)]
        # The sender retries the rest: the series gets a new generation with all 300.
        rest = [f for f in files if f not in acked]
        out: StoreOutcome = storescu(node.port, rest)
        assert len(out.acknowledged) == len(rest), out.output[-2000:]
        wait_until(lambda: len([r for r in node.job_rows() if r.state == FAKE_FINAL]) == 2, 60,
                   what="second-generation job")
        assert node.indexed() == 300
        assert [(r.generation, r.state, r.instance_count) for r in node.job_rows()] == \
            [(1, FAKE_FINAL, n_first), (2, FAKE_FINAL, 300)]
        assert sorted(int(p.read_text()) for p in node.markers_named("finished")) == \
            [n_first, 300]
    finally:
        assert node.proc.stop() == 0


def test_kill9_during_job(tmp_path: Path, shared_data: Path) -> None:
    files = fill_uids(sorted((shared_data / "ct/totalseg_example/dicom").iterdir()),
                      tmp_path / "sent")
    node = Node(tmp_path / "node", "blocking")
    node.proc.start(node.port)
    assert len(storescu(node.port, files, "-xv").acknowledged) == 20
    wait_until(lambda: node.markers_named("started"), 60, what="analysis started")
    assert [r.state for r in node.job_rows()] == ["running"]
    node.proc.kill9()
    assert not node.markers_named("finished")

    node.proc.start(node.port)
    try:
        # Start-up recovery re-queued the interrupted job; the analysis starts again.
        wait_until(lambda: len(node.markers_named("started")) == 2, 60, what="re-run")
        (node.markers / "release").write_text("go")
        wait_until(lambda: [r for r in node.job_rows() if r.state == FAKE_FINAL], 60,
                   what="job done")
        rows = node.job_rows()
        assert [(r.generation, r.state, r.attempts) for r in rows] == [(1, FAKE_FINAL, 2)]
        assert len(node.markers_named("finished")) == 1  # analysed to completion once
        assert node.indexed() == 20
        assert "interrupted jobs recovered" in node.log()
    finally:
        assert node.proc.stop() == 0


def test_worker_killed_mid_analysis_is_taken_over_at_once(tmp_path: Path,
                                                          shared_data: Path) -> None:
    """Issue 16 (7): kill -9 of the worker child alone. The supervisor sees it die and puts its
    job back in the queue at once; the restarted worker finishes it long before the lease
    (300 s here) would have expired, and the takeover is logged."""
    files = fill_uids(sorted((shared_data / "ct/totalseg_example/dicom").iterdir()),
                      tmp_path / "sent")
    node = Node(tmp_path / "node", "blocking",
                queue={"series_quiet_seconds": 1, "workers": 1, "poll_seconds": 0.1,
                       "job_lease_seconds": 300})
    node.proc.start(node.port)
    try:
        assert len(storescu(node.port, files, "-xv").acknowledged) == 20
        wait_until(lambda: node.markers_named("started"), 60, what="analysis started")

        def worker_pids() -> list[int]:
            return [json.loads(line)["pid"] for line in node.log().splitlines()
                    if '"child started"' in line and '"worker-0"' in line]

        t0 = time.monotonic()
        os.kill(worker_pids()[-1], signal.SIGKILL)
        wait_until(lambda: len(node.markers_named("started")) == 2, 60, what="re-run")
        (node.markers / "release").write_text("go")
        wait_until(lambda: [r for r in node.job_rows() if r.state == FAKE_FINAL], 60,
                   what="job finished")
        assert time.monotonic() - t0 < 60  # not the 300 s lease
        assert [(r.state, r.attempts) for r in node.job_rows()] == [(FAKE_FINAL, 2)]
        assert "job taken over" in node.log()
    finally:
        assert node.proc.stop() == 0


def test_sigterm_stops_all_children(tmp_path: Path) -> None:
    node = Node(tmp_path, "recording")
    node.proc.start(node.port)
    pgid = node.proc.proc.pid  # type: ignore[union-attr]
    # A peer that connected but never sent an A-ASSOCIATE-RQ must not hold up the stop.
    idle = socket.create_connection(("127.0.0.1", node.port))
    assert node.proc.stop() == 0
    idle.close()

    def group_empty() -> bool:  # multiprocessing's resource tracker exits just after us
        r = subprocess.run(["pgrep", "-g", str(pgid)], capture_output=True, text=True,
                           check=False)
        return r.stdout.strip() == ""

    wait_until(group_empty, 15, what="all node processes gone")
    assert "all children stopped" in node.log()
    assert "did not stop in time" not in node.log()


def test_crashed_child_is_restarted(tmp_path: Path) -> None:
    """kill -9 of the listener child alone: the supervisor starts a new one, which serves."""
    node = Node(tmp_path, "recording")
    node.proc.start(node.port)
    try:
        def listener_pids() -> list[int]:
            return [json.loads(line)["pid"] for line in node.log().splitlines()
                    if '"child started"' in line and '"listener"' in line]

        first = listener_pids()
        assert len(first) == 1
        os.kill(first[0], signal.SIGKILL)
        wait_until(lambda: len(listener_pids()) == 2, 30, what="listener restarted")
        wait_until(lambda: echoscu(node.port).returncode == 0, 60, what="echo after restart")
        assert "child exited; restarting" in node.log()
    finally:
        assert node.proc.stop() == 0


def test_results_reach_a_dicom_destination(tmp_path: Path, shared_data: Path) -> None:
    """storescu -> node -> job -> publisher -> outbox process -> dcmtk storescp: the wiring of
    ``serve`` end to end (the analysis and the objects are test fakes; the real exporters and
    Orthanc are covered by the outbox and end-to-end tests)."""
    received = tmp_path / "pacs"
    received.mkdir()
    pacs_port = free_port()
    pacs = subprocess.Popen(["storescp", "-aet", "PACS", "-od", str(received), str(pacs_port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    files = fill_uids(sorted((shared_data / "ct/totalseg_example/dicom").iterdir()),
                      tmp_path / "sent")
    node = Node(tmp_path / "node", "recording", publisher="secondary_capture",
                destinations=[{"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1",
                               "port": pacs_port, "send": ["sc"]}],
                retry={"max_attempts": 5, "base_delay_seconds": 0.2, "max_delay_seconds": 1})
    node.proc.start(node.port)
    try:
        assert len(storescu(node.port, files, "-xv").acknowledged) == 20
        # "sent" is recorded after the PACS's C-STORE response, which storescp gives once the
        # file is written: only then is the file complete (it appears while being written)
        wait_until(lambda: node.rows(select(outbox_items.c.state)) == [("sent",)], 90,
                   what="outbox item marked sent")
        got = list(received.iterdir())
        assert len(got) == 1  # sent once
        ds = dcmread(got[0])
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"
        assert ds.StudyInstanceUID == dcmread(files[0], stop_before_pixels=True).StudyInstanceUID
        assert [r.state for r in node.job_rows()] == [FAKE_FINAL]
    finally:
        assert node.proc.stop() == 0
        pacs.terminate()
        pacs.wait(10)
