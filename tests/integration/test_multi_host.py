"""Past one machine (issue 14): two ``osteo-node serve`` "hosts" with different roles share one
PostgreSQL database (a real server, reached over TCP on 127.0.0.1) and one spool and outbox
folder (the shared mount), each with its own DICOM port:

* host A: ``--roles listener,assembler,worker`` (on the command line);
* host B: ``node.roles: [listener, worker, outbox]`` (in its configuration).

The schema is made once by ``osteo-node db upgrade``. Real CT series (the 20-slice JPEG 2000
slab of ../shared/data, analysed by the real CT pipeline) are sent to both listeners at once with
dcmtk ``storescu``: every series is analysed exactly once (one job each, one attempt) and every
result object reaches Orthanc (in its private network namespace) exactly once. Then host A is
killed with kill -9 (its whole process group) while its worker analyses a series: host B's
worker takes the job over once A's lease has expired and finishes it; its results reach Orthanc
once, nothing received is lost. ``osteo-node status`` shows both hosts' processes, A's stale
after the kill.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from sqlalchemy import func, select

from osteo_node.outbox.tables import outbox_items, outbox_objects
from osteo_node.queue.jobs import jobs
from osteo_node.store.db import make_engine
from osteo_node.store.index import instances, series
from tests.integration.e2e_support import check_no_phi, identified_copies, result_series
from tests.integration.orthanc import OrthancServer, orthanc_fixture  # noqa: F401
from tests.node.support import (
    REPO,
    NodeProcess,
    free_port,
    node_config,
    storescu,
    wait_until,
    write_config,
)
from tests.outbox.postgres import TempPostgres
from tests.outbox.postgres import unavailable_reason as pg_unavailable_reason

CT_MODEL = REPO / "ai_models" / "ct_sagittal" / "model.json"
LEASE_S = 8.0  # short, so that the takeover after kill -9 is quick
SERIES = 4
SLAB = "ct/totalseg_example/dicom"  # the smallest real CT the pipeline analyses (20 slices)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.shared_data,
    pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk not installed"),
    pytest.mark.skipif(not CT_MODEL.is_file(), reason="CT model not present in ai_models/"),
    pytest.mark.skipif(pg_unavailable_reason() is not None,
                       reason=pg_unavailable_reason() or ""),
]


@pytest.fixture
def database() -> Any:
    server = TempPostgres.start(tcp_port=free_port())
    try:
        yield server
    finally:
        server.stop()


class Host:
    """One ``serve`` with its own configuration, DICOM port and log; shared database and
    folders."""

    def __init__(self, name: str, tmp: Path, shared: Path, url: str, orthanc: OrthancServer,
                 roles: list[str], roles_flag: bool) -> None:
        self.name = name
        self.port = free_port()
        home = tmp / name
        home.mkdir(parents=True)
        dest = {"name": "orthanc", "ae_title": orthanc.aet, "host": orthanc.host,
                "port": orthanc.dicom_port, "send": ["sr", "seg", "sc", "kos"]}
        cfg = node_config(
            home, self.port,
            storage={"spool_dir": str(shared / "spool"), "outbox_dir": str(shared / "outbox"),
                     "database_url": url},
            queue={"series_quiet_seconds": 1, "workers": 1, "poll_seconds": 0.1,
                   "job_lease_seconds": LEASE_S},
            node={"name": name, "heartbeat_seconds": 1,
                  **({} if roles_flag else {"roles": roles})},
            destinations=[dest],
            retry={"max_attempts": 5, "base_delay_seconds": 0.5, "max_delay_seconds": 2})
        self.config = write_config(home, cfg)
        self.log = tmp / f"{name}.log"
        self.proc = NodeProcess(self.config, self.log)
        if roles_flag:
            self.proc.serve_args += ["--roles", ",".join(roles)]

    def start(self) -> Host:
        self.proc.start(self.port)
        return self


def _osteo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "osteo_node", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120, check=False)


def _send_at_once(batches: list[tuple[int, list[Path]]]) -> None:
    """Each (port, files) by its own storescu, all at the same time."""
    outcomes: dict[int, int] = {}

    def send(i: int, port: int, files: list[Path]) -> None:
        outcomes[i] = len(storescu(port, files, "-xv").acknowledged)

    threads = [threading.Thread(target=send, args=(i, port, files))
               for i, (port, files) in enumerate(batches)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert outcomes == {i: len(files) for i, (_port, files) in enumerate(batches)}


class Cluster:
    """The two hosts, their database (read by the test) and Orthanc."""

    def __init__(self, url: str, host_a: Host, host_b: Host, orthanc: OrthancServer) -> None:
        self.engine = make_engine(url)
        self.a, self.b, self.orthanc = host_a, host_b, orthanc

    def rows(self, stmt: Any) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(stmt).all())

    def job_rows(self) -> list[Any]:
        return self.rows(select(jobs.c.id, jobs.c.state, jobs.c.attempts, jobs.c.worker,
                                jobs.c.started_at, jobs.c.finished_at, jobs.c.lease_until,
                                series.c.series_instance_uid)
                         .join(series, series.c.id == jobs.c.series_id).order_by(jobs.c.id))

    def delivered_exactly_once(self, expected_jobs: int) -> bool:
        """Every job done, every result object sent, Orthanc received each exactly once."""
        if len([r for r in self.job_rows() if r.state == "done"]) != expected_jobs:
            return False
        uids = [r[0] for r in self.rows(select(outbox_objects.c.sop_instance_uid))]
        states = {r[0] for r in self.rows(select(outbox_items.c.state))}
        return bool(uids) and states == {"sent"} and Counter(
            self.orthanc.received_sop_uids()) == Counter(uids)

    def hosts_status(self) -> dict[str, list[dict[str, Any]]]:
        r = _osteo("status", "--config", str(self.b.config), "--json")
        assert r.returncode == 0, r.stderr
        hosts: dict[str, list[dict[str, Any]]] = json.loads(r.stdout)["hosts"]
        return hosts


def _uid(files: list[Path], keyword: str) -> str:
    return str(dcmread(files[0], stop_before_pixels=True).get(keyword))


def _both_listeners_at_once(cluster: Cluster, sent: list[list[Path]], shared: Path
                            ) -> dict[str, Any]:
    """Four series, two to each listener, all at once: each analysed once, delivered once."""
    t0 = time.monotonic()
    _send_at_once([(cluster.a.port, sent[0]), (cluster.a.port, sent[1]),
                   (cluster.b.port, sent[2]), (cluster.b.port, sent[3])])
    wait_until(lambda: cluster.delivered_exactly_once(SERIES), 600, interval=0.5,
               what="4 series analysed and their results in Orthanc")
    seconds = time.monotonic() - t0
    first = cluster.job_rows()
    assert sorted(r.series_instance_uid for r in first) == sorted(
        _uid(files, "SeriesInstanceUID") for files in sent)
    assert [(r.state, r.attempts) for r in first] == [("done", 1)] * SERIES
    for files in sent:
        study = _uid(files, "StudyInstanceUID")
        assert {"SR", "SEG", "OT"} <= set(result_series(cluster.orthanc, study)), study
    assert {h: sorted((p["process"], p["state"]) for p in procs)
            for h, procs in cluster.hosts_status().items()} == {
        "host-a": [("assembler", "alive"), ("listener", "alive"), ("supervisor", "alive"),
                   ("worker-0", "alive")],
        "host-b": [("listener", "alive"), ("outbox", "alive"), ("supervisor", "alive"),
                   ("worker-0", "alive")]}
    # each listener keeps its own slots in the shared spool
    assert {p.name for p in (shared / "spool" / ".slots").iterdir()} == {"host-a", "host-b"}
    return {"seconds": seconds,
            "jobs_per_host": dict(Counter(r.worker.split(":")[0] for r in first))}


def _kill9_of_a_mid_analysis(cluster: Cluster, files: list[Path]) -> float:
    """Host A is killed (its whole process group) while its worker analyses ``files``; B
    takes the job over after A's lease expired and delivers its results once. Returns how
    long after the kill B finished it."""
    assert cluster.b.proc.stop() == 0  # so that A's worker is the one that claims the job
    _send_at_once([(cluster.a.port, files)])

    def running_on_a() -> Any:
        return next((r for r in cluster.job_rows() if r.state == "running"
                     and r.worker.startswith("host-a:")), None)

    victim = wait_until(running_on_a, 300, interval=0.05, what="a job running on host A")
    cluster.b.start()
    cluster.a.proc.kill9()
    killed_at = time.time()
    (at_kill,) = [r for r in cluster.job_rows() if r.id == victim.id]
    assert at_kill.state == "running"  # A died mid-analysis; it beats no more

    def finished() -> Any:
        (r,) = [r for r in cluster.job_rows() if r.id == victim.id]
        return r if r.state == "done" else None

    taken = wait_until(finished, 300, interval=0.2, what="host B finishing A's job")
    assert taken.worker.startswith("host-b:") and taken.attempts == 2
    assert taken.started_at >= at_kill.lease_until  # claimed only once A's lease expired
    wait_until(lambda: cluster.delivered_exactly_once(SERIES + 1), 300, interval=0.5,
               what="the taken-over job's results in Orthanc")
    assert [(r.state, r.attempts) for r in cluster.job_rows()] == [
        ("done", 1)] * SERIES + [("done", 2)]
    # nothing received was lost: every instance of the five series is indexed
    assert cluster.rows(select(func.count()).select_from(instances)) == [
        (20 * (SERIES + 1),)]

    def a_is_stale() -> bool:
        states = {h: {p["state"] for p in procs}
                  for h, procs in cluster.hosts_status().items()}
        return states == {"host-a": {"stale"}, "host-b": {"alive"}}

    wait_until(a_is_stale, 60, interval=1, what="host A shown stale, B alive")
    return float(taken.finished_at - killed_at)


def test_two_hosts_share_the_work_and_survive_kill9_of_one(
        tmp_path: Path, shared_data: Path, orthanc: OrthancServer,
        database: TempPostgres) -> None:
    url = database.tcp_url
    migrated = _osteo("db", "upgrade", "--db", url)
    assert migrated.returncode == 0 and "upgraded from nothing to" in migrated.stdout, (
        migrated.stdout + migrated.stderr)
    src = sorted(p for p in (shared_data / SLAB).iterdir() if p.is_file())
    sent = [identified_copies(src, tmp_path / "sent" / str(i)) for i in range(SERIES + 1)]
    shared = tmp_path / "shared"
    host_a = Host("host-a", tmp_path, shared, url, orthanc,
                  ["listener", "assembler", "worker"], roles_flag=True).start()
    host_b = Host("host-b", tmp_path, shared, url, orthanc,
                  ["listener", "worker", "outbox"], roles_flag=False).start()
    cluster = Cluster(url, host_a, host_b, orthanc)
    try:
        shared_work = _both_listeners_at_once(cluster, sent[:SERIES], shared)
        takeover_s = _kill9_of_a_mid_analysis(cluster, sent[SERIES])
    finally:
        host_a.proc.stop()
        assert host_b.proc.stop() == 0
        cluster.engine.dispose()
    for host in (host_a, host_b):
        check_no_phi(host.log.read_text(errors="replace"))
    print(f"multi-host: {SERIES} series in {shared_work['seconds']:.1f} s (jobs per host "
          f"{shared_work['jobs_per_host']}), kill -9 takeover finished {takeover_s:.1f} s "
          f"after the kill (lease {LEASE_S:.0f} s), {len(orthanc.received_sop_uids())} "
          "objects, each received once")
