"""Sustained-load benchmark (issue 14, acceptance 2): does the analysis queue keep up?

N real CT series (default 50 copies of the 141-slice chest series in
../shared/data/ct/chest_ct_series, each with fresh Study/Series/SOP Instance UIDs, so each is a
new series) are sent with dcmtk ``storescu`` at a fixed arrival rate to ``osteo-node serve``,
which analyses them with the real CT analyser and the shipped model and delivers the results
(SR, SEG, SC, KOS) to a local dcmtk ``storescp`` through its outbox. Configurations:

  a  one host, 1 worker process      (serve --roles listener,assembler,worker,outbox)
  b  one host, 2 worker processes    (the same, queue.workers: 2)
  c  two "hosts": host A serve --roles listener,assembler,worker,outbox (1 worker) and host B
     serve --roles worker (1 worker), sharing one PostgreSQL (TCP 127.0.0.1; a throw-away
     server, tests/outbox/postgres.py) and one spool and outbox folder

a and b use the embedded SQLite database (what one host runs; ``--one-host-db postgresql`` for
a PostgreSQL server there too). Each configuration starts from an empty database and spool.
Timings come from the database, not the logs: queue wait = job created -> claimed
(``jobs.created_at`` -> ``started_at``), analysis = claimed -> finished (``finished_at``: the
results are in the outbox), end-to-end = last instance of the series received
(``series.last_received_at``) -> its last result delivered (``outbox_items.sent_at``; includes
``queue.series_quiet_seconds``). The queue (jobs queued, and running) is sampled during the
run; the least-squares trend of the jobs waiting (queued) over the arrival window (first job
queued -> last series queued) says whether the queue grows at the arrival rate.

The default arrival rate is the issue's requirement, 2,000 CT series a day per 2 CPU cores
(43.2 s between series on 2 cores). Capacity: when the queue grew the workers were saturated and
the completion rate is the capacity; otherwise it is estimated from the analysis times. Run it
on a quiet machine: the load before start is printed, and figures taken under other load are not
representative. See docs/deployment.md, "Sizing".

    .venv/bin/python benchmarks/bench_throughput.py [--series 50] [--interval S | --rate N]
        [--configs a,b,c] [--source chest|slab] [--quick] [--json OUT] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.throughput_stats import (  # noqa: E402
    REQUIRED_SERIES_PER_DAY_PER_2_CORES,
    capacity_per_hour,
    completion_rate_per_hour,
    per_day_per_2_cores,
    percentile,
    queue_grows,
    required_per_hour,
    requirement_verdict,
    service_capacity_per_hour,
    slope_per_hour,
)

DATA = Path(os.environ.get("OSTEO_SHARED_DATA", REPO.parent / "shared" / "data"))
CT_MODEL = REPO / "ai_models" / "ct_sagittal" / "model.json"
AE, CALLER, PACS_AE = "OSTEO_NODE", "STORESCU", "PACS"
#: source series -> (folder under the shared data, extra storescu arguments)
SOURCES = {"chest": ("ct/chest_ct_series/dicom", ()),
           "slab": ("ct/totalseg_example/dicom", ("-xv",))}  # JPEG 2000, 20 slices
FINAL = ("done", "not_analysable", "failed", "no_analyser")
ALL_ROLES = "listener,assembler,worker,outbox"


@dataclass(frozen=True)
class HostSpec:
    name: str
    roles: str
    workers: int


@dataclass(frozen=True)
class Layout:
    key: str
    title: str
    hosts: tuple[HostSpec, ...]
    postgres: bool

    @property
    def workers(self) -> int:
        return sum(h.workers for h in self.hosts)


def layouts(one_host_postgres: bool) -> dict[str, Layout]:
    return {
        "a": Layout("a", "1 worker process, one host", (HostSpec("host-a", ALL_ROLES, 1),),
                    one_host_postgres),
        "b": Layout("b", "2 worker processes, one host", (HostSpec("host-a", ALL_ROLES, 2),),
                    one_host_postgres),
        "c": Layout("c", "two hosts (A: listener,assembler,worker,outbox; B: worker), shared "
                    "PostgreSQL and spool", (HostSpec("host-a", ALL_ROLES, 1),
                                             HostSpec("host-b", "worker", 1)), True),
    }


@dataclass(frozen=True)
class Options:
    series: int
    interval: float
    configs: tuple[str, ...]
    source: str
    quiet_seconds: float
    sample_seconds: float
    drain_timeout: float
    one_host_postgres: bool
    json_out: Path | None
    keep: Path | None
    quick: bool


def parse_args(argv: list[str] | None = None) -> Options:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--series", type=int, help="series sent per configuration (default 50)")
    rate = ap.add_mutually_exclusive_group()
    rate.add_argument("--interval", type=float, help="seconds between series (default: the "
                      "requirement's rate for this machine's cores, 43.2 s on 2 cores)")
    rate.add_argument("--rate", type=float, help="arrival rate in series/hour")
    ap.add_argument("--configs", default="a,b,c", help="comma-separated: a, b, c")
    ap.add_argument("--source", choices=sorted(SOURCES), default="chest",
                    help="chest: 141-slice chest CT (default); slab: 20-slice JPEG 2000 slab")
    ap.add_argument("--quiet-seconds", type=float,
                    help="queue.series_quiet_seconds (default 30, the shipped setting)")
    ap.add_argument("--sample-seconds", type=float, help="queue depth sampled this often "
                    "(default 10)")
    ap.add_argument("--drain-timeout", type=float, default=7200.0,
                    help="after the last series is sent, wait at most this long for the "
                    "results (default 7200 s)")
    ap.add_argument("--one-host-db", choices=("sqlite", "postgresql"), default="sqlite",
                    help="database of configurations a and b (c always uses PostgreSQL)")
    ap.add_argument("--quick", action="store_true", help="development run: 4 series, 15 s "
                    "apart, 5 s quiet, sampled every 2 s (NOT a measurement)")
    ap.add_argument("--json", type=Path, help="write every figure (and each job) here")
    ap.add_argument("--keep", type=Path, help="work folder to keep (default: a temp folder)")
    a = ap.parse_args(argv)
    configs = tuple(c.strip() for c in a.configs.split(",") if c.strip())
    unknown = [c for c in configs if c not in ("a", "b", "c")]
    if unknown or not configs:
        ap.error(f"--configs: unknown {unknown or 'empty'}; choose from a, b, c")
    cores = cpu_cores()
    if a.rate is not None:
        interval = 3600.0 / a.rate
    elif a.interval is not None:
        interval = a.interval
    else:
        interval = 15.0 if a.quick else 3600.0 / required_per_hour(cores)
    if interval < 0 or (a.series is not None and a.series < 1):
        ap.error("--interval/--rate must be positive and --series at least 1")
    return Options(
        series=a.series or (4 if a.quick else 50), interval=interval, configs=configs,
        source=a.source,
        quiet_seconds=a.quiet_seconds if a.quiet_seconds is not None else (
            5.0 if a.quick else 30.0),
        sample_seconds=a.sample_seconds or (2.0 if a.quick else 10.0),
        drain_timeout=a.drain_timeout, one_host_postgres=a.one_host_db == "postgresql",
        json_out=a.json, keep=a.keep, quick=a.quick)


def cpu_cores() -> int:
    return len(os.sched_getaffinity(0))


def settle_load(baseline: float, max_wait: float) -> float:
    """Wait (polling, at most ``max_wait`` s) until the 1-minute load average is back near
    ``baseline``: the previous configuration's own work is still in it. Returns the wait."""
    t0 = time.monotonic()
    done = threading.Event()
    while os.getloadavg()[0] > baseline + 0.2 and time.monotonic() - t0 < max_wait:
        done.wait(5.0)
    return time.monotonic() - t0


def machine_state() -> dict[str, Any]:
    load = os.getloadavg()
    return {"cpu_cores": cpu_cores(), "cpu_count": os.cpu_count(),
            "load_1_5_15": [round(x, 2) for x in load],
            "busy": load[0] > 0.25 * cpu_cores()}


# --- the series -------------------------------------------------------------------------------

def make_copies(source: str, root: Path, n: int) -> list[list[Path]]:
    """``n`` copies of the source series, each with fresh Study/Series/SOP Instance UIDs (every
    other element, the pixel data included, unchanged). Made once; every configuration gets the
    same copies (each starts from an empty database and spool)."""
    from tests.node.support import fill_uids

    folder = DATA / SOURCES[source][0]
    src = sorted(p for p in folder.iterdir() if p.is_file())
    return [fill_uids(src, root / f"{i:03d}") for i in range(n)]


@dataclass
class Send:
    index: int
    scheduled_s: float  # seconds after the first arrival
    started: float  # epoch
    ended: float = 0.0
    returncode: int | None = None
    error: str = ""


class Arrivals(threading.Thread):
    """Sends series ``i`` at ``t0 + i * interval`` (each by its own storescu, so a slow
    association does not shift the schedule)."""

    def __init__(self, port: int, series: list[list[Path]], interval: float,
                 extra: tuple[str, ...]) -> None:
        super().__init__(daemon=True)
        self.port, self.series, self.interval, self.extra = port, series, interval, extra
        self.stop = threading.Event()
        self.sends: list[Send] = []
        self.t0 = time.time()
        self._senders: list[threading.Thread] = []

    def run(self) -> None:
        t0_mono = time.monotonic()
        self.t0 = time.time()
        for i, files in enumerate(self.series):
            # the deliberate arrival schedule (the only fixed wait of the benchmark)
            if self.stop.wait(max(0.0, t0_mono + i * self.interval - time.monotonic())):
                break
            send = Send(i, i * self.interval, time.time())
            self.sends.append(send)
            th = threading.Thread(target=self._send, args=(send, files), daemon=True)
            th.start()
            self._senders.append(th)
        for th in self._senders:
            th.join()

    def _send(self, send: Send, files: list[Path]) -> None:
        r = subprocess.run(["storescu", "-aet", CALLER, "-aec", AE, *self.extra, "127.0.0.1",
                            str(self.port), *map(str, files)],
                           capture_output=True, text=True, check=False, timeout=1800)
        send.ended, send.returncode = time.time(), r.returncode
        send.error = "" if r.returncode == 0 else (r.stdout + r.stderr)[-500:]


# --- the node and its peers -------------------------------------------------------------------

class Pacs:
    """dcmtk storescp: the destination of the results (+xa: every transfer syntax it knows,
    the SEG is JPEG 2000 lossless)."""

    def __init__(self, root: Path) -> None:
        from tests.node.support import free_port

        self.port = free_port()
        self.folder = root / "pacs"
        self.folder.mkdir(parents=True)
        self.log = root / "storescp.log"
        with self.log.open("wb") as logf:
            self.proc = subprocess.Popen(
                ["storescp", "-aet", PACS_AE, "+xa", "-od", str(self.folder), str(self.port)],
                stdout=logf, stderr=subprocess.STDOUT)

    def received(self) -> int:
        return sum(1 for p in self.folder.iterdir() if p.is_file())

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(30)


class ServeHost:
    """One ``osteo-node serve --roles ...`` in its own process group, with its configuration."""

    def __init__(self, spec: HostSpec, root: Path, shared: Path, url: str, pacs: Pacs,
                 quiet_seconds: float) -> None:
        from tests.node.support import free_port, node_config, write_config

        self.spec = spec
        self.port = free_port()
        home = root / spec.name
        home.mkdir(parents=True)
        cfg = node_config(
            home, self.port,
            storage={"spool_dir": str(shared / "spool"), "outbox_dir": str(shared / "outbox"),
                     "database_url": url},
            queue={"series_quiet_seconds": quiet_seconds, "workers": spec.workers,
                   "poll_seconds": 0.5},  # the shipped poll interval
            node={"name": spec.name}, retention={"enabled": False})
        cfg["destinations"] = [{"name": "pacs", "ae_title": PACS_AE, "host": "127.0.0.1",
                                "port": pacs.port, "send": ["sr", "seg", "sc", "kos"]}]
        cfg["dicom"]["allowed_callers"] = [CALLER]
        self.config = write_config(home, cfg)
        self.log = root / f"{spec.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ServeHost:
        args = ["--allow-root"] if os.geteuid() == 0 else []
        with self.log.open("ab") as logf:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "osteo_node", "serve", "--config", str(self.config),
                 "--roles", self.spec.roles, *args],
                cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=logf,
                stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def ready(self, engine: Any) -> bool:
        """Listening (with the listener role) and every worker and the outbox heart-beating."""
        from sqlalchemy import select

        from osteo_node.node.processes import node_processes
        from tests.node.support import port_open

        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.spec.name} exited with {self.proc.returncode}: "
                               f"{self.log.read_text(errors='replace')[-2000:]}")
        if "listener" in self.spec.roles and not port_open(self.port):
            return False
        with engine.connect() as conn:
            roles = [r[0] for r in conn.execute(select(node_processes.c.role).where(
                node_processes.c.host == self.spec.name))]
        return roles.count("worker") == self.spec.workers and (
            "outbox" not in self.spec.roles or "outbox" in roles)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)


def poll_until(pred: Any, timeout: float, what: str, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def migrate(url: str) -> None:
    r = subprocess.run([sys.executable, "-m", "osteo_node", "db", "upgrade", "--db", url],
                       cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"db upgrade failed: {r.stdout}{r.stderr}")


# --- reading the database ---------------------------------------------------------------------

@dataclass
class JobTiming:
    series_uid: str
    state: str
    attempts: int
    worker: str
    generation: int
    instances: int
    last_received: float
    created: float
    started: float | None
    finished: float | None
    items: int
    items_sent: int
    delivered: float | None  # when its last item was sent (all sent), epoch


def _epoch(naive_utc: datetime | None) -> float | None:
    return None if naive_utc is None else naive_utc.replace(tzinfo=UTC).timestamp()


def read_jobs(engine: Any) -> list[JobTiming]:
    from sqlalchemy import select

    from osteo_node.outbox.tables import outbox_items, outbox_objects
    from osteo_node.queue.jobs import jobs
    from osteo_node.store.index import series

    with engine.connect() as conn:
        rows = conn.execute(
            select(jobs.c.id, jobs.c.state, jobs.c.attempts, jobs.c.worker, jobs.c.generation,
                   jobs.c.created_at, jobs.c.started_at, jobs.c.finished_at,
                   series.c.series_instance_uid, series.c.last_received_at,
                   series.c.instance_count)
            .join(series, series.c.id == jobs.c.series_id).order_by(jobs.c.id)).all()
        items = conn.execute(
            select(outbox_objects.c.job_id, outbox_items.c.state, outbox_items.c.sent_at)
            .join(outbox_items, outbox_items.c.sop_instance_uid
                  == outbox_objects.c.sop_instance_uid)).all()
    per_job: dict[str, list[Any]] = {}
    for it in items:
        per_job.setdefault(str(it.job_id), []).append(it)
    out = []
    for r in rows:
        mine = per_job.get(str(r.id), [])
        sent = [it for it in mine if it.state == "sent"]
        delivered = max((_epoch(it.sent_at) or 0.0) for it in sent) if (
            mine and len(sent) == len(mine)) else None
        out.append(JobTiming(
            series_uid=r.series_instance_uid, state=r.state, attempts=r.attempts,
            worker=r.worker or "", generation=r.generation, instances=r.instance_count,
            last_received=r.last_received_at, created=r.created_at, started=r.started_at,
            finished=r.finished_at, items=len(mine), items_sent=len(sent),
            delivered=delivered))
    return out


def settled(job: JobTiming) -> bool:
    """Finished, and its results delivered (or there were none to deliver)."""
    return job.state in FINAL and (job.items == 0 or job.delivered is not None)


@dataclass
class Sample:
    t: float  # seconds after the first arrival
    received: int  # series the node has seen
    queued: int
    running: int
    finished: int
    delivered: int

    @property
    def depth(self) -> int:
        """Queue depth as ``osteo-node status`` shows it: queued + running."""
        return self.queued + self.running


def sample(engine: Any, t0: float) -> tuple[Sample, list[JobTiming]]:
    from sqlalchemy import func, select

    from osteo_node.store.index import series

    t = time.time() - t0
    timings = read_jobs(engine)
    with engine.connect() as conn:
        received = int(conn.execute(select(func.count()).select_from(series)).scalar_one())
    states = [j.state for j in timings]
    return Sample(round(t, 1), received, states.count("queued"), states.count("running"),
                  sum(s in FINAL for s in states), sum(settled(j) for j in timings)), timings


# --- one configuration ------------------------------------------------------------------------

@dataclass
class RunRecord:
    layout: Layout
    machine_before: dict[str, Any]
    t0: float = 0.0
    samples: list[Sample] = field(default_factory=list)
    jobs: list[JobTiming] = field(default_factory=list)
    sends: list[Send] = field(default_factory=list)
    complete: bool = False
    pacs_objects: int = 0
    slices: int = 0


def run_layout(layout: Layout, opts: Options, copies: list[list[Path]], root: Path
               ) -> RunRecord:
    from osteo_node.store.db import make_engine
    from tests.node.support import free_port
    from tests.outbox.postgres import TempPostgres

    work = root / f"config_{layout.key}"
    work.mkdir()
    record = RunRecord(layout, machine_state(), slices=len(copies[0]))
    pg = TempPostgres.start(tcp_port=free_port()) if layout.postgres else None
    url = pg.tcp_url if pg else f"sqlite:///{work / 'node.db'}"
    pacs: Pacs | None = None
    hosts: list[ServeHost] = []
    engine = None
    try:
        migrate(url)
        engine = make_engine(url)
        pacs = Pacs(work)
        hosts = [ServeHost(spec, work, work / "shared", url, pacs, opts.quiet_seconds)
                 for spec in layout.hosts]
        for h in hosts:
            h.start()
            poll_until(lambda h=h: h.ready(engine), 180, f"{h.spec.name} ready")
        arrivals = Arrivals(hosts[0].port, copies, opts.interval, SOURCES[opts.source][1])
        arrivals.start()
        poll_until(lambda: bool(arrivals.sends), 60, "the first series sent", 0.01)
        record.t0 = arrivals.t0
        _observe(record, engine, arrivals, opts)
        arrivals.stop.set()
        arrivals.join(300)
        record.sends = arrivals.sends
        record.jobs = read_jobs(engine)
        record.pacs_objects = pacs.received()
    finally:
        for h in reversed(hosts):
            h.stop()
        if pacs is not None:
            pacs.stop()
        if engine is not None:
            engine.dispose()
        if pg is not None:
            pg.stop()
        if opts.keep is None:
            shutil.rmtree(work / "shared", ignore_errors=True)  # the spool: GBs of copies
    return record


def _observe(record: RunRecord, engine: Any, arrivals: Arrivals, opts: Options) -> None:
    """Sample the queue until every series is analysed and its results delivered (or the drain
    timeout after the last arrival)."""
    n = len(arrivals.series)
    last_arrival = record.t0 + (n - 1) * opts.interval
    deadline = last_arrival + opts.quiet_seconds + opts.drain_timeout
    tick = threading.Event()
    while True:
        s, timings = sample(engine, record.t0)
        record.samples.append(s)
        if (not arrivals.is_alive() and len(timings) >= n
                and all(settled(j) for j in timings)):
            record.complete = True
            return
        if any(x.returncode not in (None, 0) for x in arrivals.sends):
            bad = next(x for x in arrivals.sends if x.returncode not in (None, 0))
            raise RuntimeError(f"storescu failed for series {bad.index}: {bad.error}")
        if time.time() > deadline:
            print(f"  config {record.layout.key}: drain timeout, {s.delivered}/{n} delivered",
                  flush=True)
            return
        tick.wait(opts.sample_seconds)  # the sampling period


# --- figures ----------------------------------------------------------------------------------

def _pcts(values: list[float]) -> dict[str, float | None]:
    return {"p50": percentile(values, 50), "p95": percentile(values, 95),
            "max": max(values) if values else None, "n": len(values)}


def summarise(rec: RunRecord, opts: Options) -> dict[str, Any]:
    cores = cpu_cores()
    jobs = rec.jobs
    waits = [j.started - j.created for j in jobs if j.started is not None]
    analysis = [j.finished - j.started for j in jobs
                if j.finished is not None and j.started is not None and j.state in FINAL]
    e2e = [j.delivered - j.last_received for j in jobs if j.delivered is not None]
    finished = [j.finished for j in jobs if j.finished is not None and j.state in FINAL]
    claimed = [j.started for j in jobs if j.started is not None]
    arrival_per_hour = 3600.0 / opts.interval if opts.interval > 0 else float("inf")
    # the arrival window: from the first job queued to the last series' job queued (before it
    # the queue is empty by construction, after it the queue drains)
    window_start = min((j.created for j in jobs), default=rec.t0) - rec.t0
    window_end = (len(rec.sends) - 1) * opts.interval + opts.quiet_seconds
    # the trend of the jobs waiting (queued): running jobs are bounded by the workers, and
    # idle workers filling up at the start is no growth
    window = [(s.t, float(s.queued)) for s in rec.samples
              if window_start <= s.t <= window_end]
    trend = slope_per_hour(window)
    grew = queue_grows(trend, arrival_per_hour)
    completion = completion_rate_per_hour(min(claimed), finished) if claimed else None
    service = service_capacity_per_hour(analysis, rec.layout.workers)
    capacity, basis = capacity_per_hour(grew, completion, service)
    cap_2 = None if capacity is None else per_day_per_2_cores(capacity, cores)
    drained = [s.t for s in rec.samples if s.delivered == len(rec.sends)]
    return {
        "config": rec.layout.key, "title": rec.layout.title, "workers": rec.layout.workers,
        "database": "postgresql" if rec.layout.postgres else "sqlite",
        "machine_before": rec.machine_before, "complete": rec.complete,
        "series_sent": len(rec.sends), "slices_per_series": rec.slices,
        "instances_indexed": sum(j.instances for j in jobs),
        "jobs": len(jobs), "states": {s: sum(j.state == s for j in jobs)
                                      for s in sorted({j.state for j in jobs})},
        "retried": sum(j.attempts > 1 for j in jobs),
        "later_generations": sum(j.generation > 1 for j in jobs),
        "jobs_per_host": {h: sum(j.worker.startswith(h + ":") for j in jobs)
                          for h in (x.name for x in rec.layout.hosts)},
        "objects_received_by_pacs": rec.pacs_objects,
        "arrival_per_hour": arrival_per_hour, "interval_s": opts.interval,
        "completed_per_hour": completion,
        "queue_wait_s": _pcts(waits), "analysis_s": _pcts(analysis), "end_to_end_s": _pcts(e2e),
        "queued_trend_per_hour": trend, "queue_grows": grew,
        "max_queued": max((s.queued for s in rec.samples), default=0),
        "max_queue_depth": max((s.depth for s in rec.samples), default=0),
        "all_delivered_after_s": drained[0] if drained else None,
        "capacity_per_hour": capacity, "capacity_basis": basis,
        "service_capacity_per_hour": service,
        "capacity_per_day_per_2_cores": cap_2,
        "required_per_day_per_2_cores": REQUIRED_SERIES_PER_DAY_PER_2_CORES,
        "verdict": requirement_verdict(grew, arrival_per_hour, cap_2, cores),
        "samples": [asdict(s) for s in rec.samples],
        "job_timings": [asdict(j) for j in jobs],
        "sends": [asdict(s) for s in rec.sends],
    }



def _fmt(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def print_summary(s: dict[str, Any]) -> None:
    print(f"\n== config {s['config']}: {s['title']} ({s['workers']} worker process(es), "
          f"{s['database']})")
    m = s["machine_before"]
    print(f"  load before start {m['load_1_5_15']} on {m['cpu_cores']} cores"
          + ("  (BUSY: not representative)" if m["busy"] else ""))
    print(f"  {s['series_sent']} series x {s['slices_per_series']} slices sent every "
          f"{s['interval_s']:.1f} s ({s['arrival_per_hour']:.1f}/h); jobs {s['jobs']} "
          f"{s['states']}, retried {s['retried']}, later generations "
          f"{s['later_generations']}, per host {s['jobs_per_host']}; "
          f"{s['instances_indexed']} instances indexed; {s['objects_received_by_pacs']} "
          f"objects received by storescp" + ("" if s["complete"] else "  (INCOMPLETE)"))
    print(f"  completed: {_fmt(s['completed_per_hour'])} series/hour; all delivered "
          f"{_fmt(s['all_delivered_after_s'], 0)} s after the first arrival")
    for key, label in (("queue_wait_s", "queue wait (created -> claimed)"),
                       ("analysis_s", "analysis (claimed -> finished)"),
                       ("end_to_end_s", "end-to-end (last instance -> delivered)")):
        v = s[key]
        print(f"  {label:<40} p50 {_fmt(v['p50'])} s  p95 {_fmt(v['p95'])} s  "
              f"max {_fmt(v['max'])} s  (n={v['n']})")
    print("  queue over time (depth as osteo-node status shows it: queued + running):")
    print("    t [s]  received  queued  running  finished  delivered")
    samples = s["samples"]
    step = max(1, len(samples) // 20)
    shown = samples[::step] + ([samples[-1]] if (len(samples) - 1) % step else [])
    for x in shown:
        print(f"    {x['t']:6.0f}  {x['received']:8d}  {x['queued']:6d}  {x['running']:7d}"
              f"  {x['finished']:8d}  {x['delivered']:9d}")
    grows = {True: "GROWS", False: "does not grow", None: "unknown"}[s["queue_grows"]]
    few = (f"  (only {s['series_sent']} series: too few to judge a trend)"
           if s["series_sent"] < 10 else "")
    print(f"  trend of the jobs queued over the arrival window: "
          f"{_fmt(s['queued_trend_per_hour'], 2)} series/hour -> the queue {grows} at "
          f"{s['arrival_per_hour']:.1f} series/hour (max queued {s['max_queued']}, max "
          f"depth {s['max_queue_depth']}){few}")
    print(f"  capacity: {_fmt(s['capacity_per_hour'])} series/hour = "
          f"{_fmt(s['capacity_per_day_per_2_cores'], 0)} CT series/day per 2 cores "
          f"({s['capacity_basis']})")
    print(f"  requirement ({s['required_per_day_per_2_cores']:.0f}/day per 2 cores): "
          f"{s['verdict']}{few}")


def _raise_on_signals() -> None:
    """SIGTERM and SIGINT (also when started in the background, where SIGINT is ignored) end
    the run through the ``finally`` blocks: the node, storescp and PostgreSQL are stopped."""
    def stop(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    _raise_on_signals()
    for tool in ("storescu", "storescp"):
        if shutil.which(tool) is None:
            print(f"{tool} (dcmtk) is needed", file=sys.stderr)
            return 2
    if not CT_MODEL.is_file():
        print(f"the shipped CT model is missing: {CT_MODEL}", file=sys.stderr)
        return 2
    folder = DATA / SOURCES[opts.source][0]
    if not folder.is_dir():
        print(f"real data not found: {folder} (set OSTEO_SHARED_DATA)", file=sys.stderr)
        return 2
    from tests.outbox.postgres import unavailable_reason

    want_pg = "c" in opts.configs or opts.one_host_postgres
    if want_pg and unavailable_reason() is not None:
        print(f"PostgreSQL needed: {unavailable_reason()}", file=sys.stderr)
        return 2
    machine = machine_state()
    print(f"CPU cores available: {machine['cpu_cores']} (os.cpu_count {machine['cpu_count']}); "
          f"load average before start {machine['load_1_5_15']}")
    if machine["busy"]:
        print("WARNING: the machine is busy: the figures below are NOT representative")
    if opts.quick:
        print("--quick: a development run, NOT a measurement")
    root = opts.keep or Path(tempfile.mkdtemp(prefix="bench_throughput_"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        t = time.perf_counter()
        copies = make_copies(opts.source, root / "series", opts.series)
        print(f"made {len(copies)} copies of {folder} ({len(copies[0])} slices each, fresh "
              f"UIDs) in {time.perf_counter() - t:.0f} s; sending one every "
              f"{opts.interval:.1f} s ({3600 / max(opts.interval, 1e-9):.1f}/h), "
              f"series_quiet_seconds {opts.quiet_seconds:g}", flush=True)
        results = []
        for i, key in enumerate(opts.configs):
            layout = layouts(opts.one_host_postgres)[key]
            if i and not opts.quick:  # the previous configuration's load, not the machine's
                waited = settle_load(machine["load_1_5_15"][0], 300.0)
                print(f"waited {waited:.0f} s for the load average to settle "
                      f"({os.getloadavg()[0]:.2f})", flush=True)
            t = time.perf_counter()
            print(f"config {key}: {layout.title} ...", flush=True)
            summary = summarise(run_layout(layout, opts, copies, root), opts)
            summary["wall_s"] = time.perf_counter() - t
            print_summary(summary)
            results.append(summary)
        if opts.json_out:
            opts.json_out.write_text(json.dumps(
                {"machine_before": machine, "options": {k: str(v) if isinstance(v, Path)
                                                        else v for k, v in
                                                        asdict(opts).items()},
                 "configs": results}, indent=1))
            print(f"\nfigures written to {opts.json_out}")
        return 0 if all(r["complete"] for r in results) else 1
    finally:
        if opts.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
