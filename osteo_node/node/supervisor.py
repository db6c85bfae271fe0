"""``osteo-node serve``: one child process per concern, restarted when it dies.

Which children run is the node's roles (``node.roles``, ``serve --roles``): several ``serve``
processes, on one host or several, can share one PostgreSQL database and spool, each with some
roles (docs/deployment.md). Every process records a heart-beat (``node_processes``).

Children (multiprocessing, spawn): ``listener`` (DICOM AE: C-ECHO, C-STORE -> spool + index),
``assembler`` (quiet series -> jobs), ``worker-N`` (analysis), ``outbox`` (C-STORE of results,
only when destinations are configured), ``retention`` (deletes settled spool and outbox files,
when ``retention.enabled``). The supervisor re-queues jobs left running by a
previous run before starting workers, restarts a crashed child with backoff, and on SIGTERM or
SIGINT stops all children (SIGTERM, then SIGKILL after a grace period). Children die with the
supervisor (Linux parent-death signal), so a kill -9 of the supervisor leaves no orphans.
"""

from __future__ import annotations

import ctypes
import faulthandler
import logging
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from types import FrameType

import structlog

from osteo_node.config import Settings
from osteo_node.safe_errors import describe

log = structlog.get_logger(__name__)

PR_SET_PDEATHSIG = 1
STOP_GRACE_SECONDS = 10.0
MAX_RESTART_DELAY = 30.0


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except OSError:
        log.warning("could not set parent-death signal")


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def handler(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


def _exit_despite_stuck_threads(timeout: float = 3.0) -> None:
    """Leave even if a library thread that is not a daemon (a peer's half-open connection in
    pynetdicom) would keep the interpreter waiting at exit."""
    deadline = time.monotonic() + timeout
    others = [t for t in threading.enumerate()
              if t is not threading.current_thread() and not t.daemon]
    for t in others:
        t.join(max(0.0, deadline - time.monotonic()))
    stuck = [t.name for t in others if t.is_alive()]
    if stuck:
        log.warning("threads still running at stop; exiting anyway", threads=stuck)
        logging.shutdown()
        os._exit(0)


def child_main(role: str, settings: Settings, index: int = 0, prepared: bool = False) -> None:
    """Entry point of a child process. ``prepared``: :func:`prepare_state` ran just before this
    start (the listener then skips its own spool check)."""
    _die_with_parent()
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # kill -USR1: dump stacks
    from osteo_node import logging_setup

    json = logging_setup.json_flag(settings.logging.format)
    logging_setup.configure(settings.logging.level, json=json)
    name = role if role != "worker" else f"worker-{index}"
    structlog.contextvars.bind_contextvars(process=name, node=settings.node.name)
    stop = _stop_on_signals()
    from osteo_node.node.heartbeat import Heartbeat

    beat = Heartbeat(settings.storage.database_url, settings.node.name, name, role,
                     settings.node.heartbeat_seconds).start()
    try:
        _run_role(role, settings, stop, index, prepared)
    finally:
        beat.stop()
    if role == "listener":
        _exit_despite_stuck_threads()


def _run_role(role: str, settings: Settings, stop: threading.Event, index: int,
              prepared: bool) -> None:
    if role == "listener":
        from osteo_node.node.listener import run_listener

        run_listener(settings, stop, prepared=prepared)
    elif role == "assembler":
        from osteo_node.queue.assembler import run_assembler

        run_assembler(settings, stop)
    elif role == "worker":
        from osteo_node.worker.runner import run_worker

        run_worker(settings, stop, index)
    elif role == "web":
        from osteo_node.web.server import run_web

        run_web(settings, stop)
    elif role == "retention":
        from osteo_node.retention.process import run_retention

        run_retention(settings, stop)
    elif role == "outbox":
        from osteo_node.outbox.sender import SenderSettings, run_sender

        run_sender(settings.storage.database_url, settings.storage.outbox_dir,
                   settings.destinations, settings.retry, stop_event=stop,
                   settings=SenderSettings(poll_interval_s=settings.queue.poll_seconds,
                                           recover_at_start=not _other_outbox_running(settings)))
    else:
        raise ValueError(f"unknown role {role}")


def _other_outbox_running(settings: Settings) -> bool:
    """Another host's outbox sender beats: its items in ``sending`` are its own (they come back
    when its lease expires), so this sender must not take them back at start."""
    from osteo_node.node.processes import live_processes
    from osteo_node.store.db import make_engine

    engine = make_engine(settings.storage.database_url)
    try:
        with engine.connect() as conn:
            live = live_processes(conn, "outbox", time.time(), settings.node.heartbeat_seconds)
    finally:
        engine.dispose()
    return bool(live - {(settings.node.name, os.getpid())})


@dataclass
class Child:
    role: str
    index: int = 0
    process: BaseProcess | None = None
    restarts: int = 0
    starts: int = 0
    next_start: float = 0.0
    started_at: float = field(default=0.0)

    @property
    def name(self) -> str:
        return f"{self.role}-{self.index}" if self.role == "worker" else self.role


def plan_children(settings: Settings) -> list[Child]:
    """The children of this ``serve``: its roles (``node.roles``, ``serve --roles``); the outbox
    only with destinations, the web application only when ``web.enabled``."""
    roles = settings.node.roles
    children = [Child(r) for r in ("listener", "assembler") if r in roles]
    if "worker" in roles:
        children += [Child("worker", i) for i in range(settings.queue.workers)]
    if "outbox" in roles and settings.destinations:
        children.append(Child("outbox"))
    if "web" in roles and settings.web.enabled:
        children.append(Child("web"))
    if "retention" in roles and settings.retention.enabled:
        children.append(Child("retention"))
    return children


def prepare_state(settings: Settings) -> None:
    """Before any child runs: the schema (the embedded SQLite database is upgraded; a server
    database must already be at the newest revision: :class:`SchemaNotCurrentError`
    otherwise), this host's heart-beat rows of processes that are gone; with the listener role,
    file spool slots left by a crash and index what the index lacks (so the assembler never sees
    a series before its recovered instances); with the worker role, re-queue the jobs this
    host's dead workers were running (other hosts' jobs come back when their lease expires)."""
    from osteo_node.node.processes import forget_dead_on_host, pid_exists
    from osteo_node.queue.jobs import recover_interrupted
    from osteo_node.queue.worker_names import dead_worker_of
    from osteo_node.store.db import make_engine
    from osteo_node.store.reconcile import reconcile_spool
    from osteo_node.store.schema import ensure_schema
    from osteo_node.store.spool import Spool

    node = settings.node
    engine = make_engine(settings.storage.database_url)
    try:
        ensure_schema(engine)
        forget_dead_on_host(engine, node.name, pid_exists)
        if "listener" in node.roles:
            spool = Spool(settings.storage.spool_dir, owner=node.name)
            filed, discarded = spool.recover()
            added = reconcile_spool(engine, spool)
            log.info("spool checked", slots_recovered=filed, torn_slots_discarded=discarded,
                     instances_reindexed=added)
        if "worker" in node.roles:
            requeued, failed = recover_interrupted(engine, settings.queue.max_job_attempts,
                                                   dead_worker_of(node.name, pid_exists))
            if requeued or failed:
                log.warning("interrupted jobs recovered", requeued=requeued, failed=failed)
    finally:
        engine.dispose()


class Supervisor:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.ctx = mp.get_context("spawn")
        self.children = plan_children(settings)
        self.stop = threading.Event()

    def _start(self, child: Child) -> None:
        # The first start follows prepare_state (spool checked, index reconciled); a restarted
        # listener checks the spool again (it may have died in the middle of a C-STORE).
        prepared = child.starts == 0
        p = self.ctx.Process(target=child_main, name=f"osteo-node:{child.name}",
                             args=(child.role, self.settings, child.index, prepared),
                             daemon=False)
        p.start()
        child.starts += 1
        child.process = p
        child.started_at = time.monotonic()
        log.info("child started", child=child.name, pid=p.pid)

    def _check(self, child: Child, now: float) -> None:
        p = child.process
        if p is not None and p.is_alive():
            if now - child.started_at > 60:
                child.restarts = 0  # ran a while: reset the backoff
            return
        if p is not None:
            log.error("child exited; restarting", child=child.name, exitcode=p.exitcode,
                      restarts=child.restarts)
            if p.pid is not None:
                self._after_death(child, p.pid)
            p.join(0)
            child.process = None
            delay = min(MAX_RESTART_DELAY, 0.5 * 2 ** child.restarts)
            child.restarts += 1
            child.next_start = now + delay
        if now >= child.next_start:
            self._start(child)

    def _after_death(self, child: Child, pid: int) -> None:
        """A child died: its heart-beat row goes; a worker's job goes back to the queue now
        instead of after its lease. Never raises (the lease and staleness cover a failure)."""
        from osteo_node.node.processes import forget_pid
        from osteo_node.queue.jobs import release_worker
        from osteo_node.queue.worker_names import worker_name
        from osteo_node.store.db import make_engine

        node = self.settings.node.name
        engine = make_engine(self.settings.storage.database_url)
        try:
            forget_pid(engine, node, pid)
            if child.role != "worker":
                return
            ids = release_worker(engine, worker_name(node, child.index, pid))
        except Exception as exc:  # noqa: BLE001 - the lease still expires; keep supervising
            log.error("could not release the dead child's job or heart-beat; its lease "
                      "expires", child=child.name, error=describe(exc))
            return
        finally:
            engine.dispose()
        if ids:
            log.warning("job taken over: its worker died, re-queued without waiting for the "
                        "lease", child=child.name, job_ids=ids)

    def run(self) -> int:
        from osteo_node.node.heartbeat import Heartbeat

        prepare_state(self.settings)
        node = self.settings.node
        beat = Heartbeat(self.settings.storage.database_url, node.name, "supervisor",
                         "supervisor", node.heartbeat_seconds).start()
        started = {c.role for c in self.children}
        log.info("node_started", node=node.name, roles=list(node.roles),
                 children=[c.name for c in self.children],
                 roles_not_started=[r for r in node.roles if r not in started])
        for child in self.children:
            self._start(child)
        try:
            while not self.stop.wait(0.5):
                now = time.monotonic()
                for child in self.children:
                    self._check(child, now)
        finally:
            self.shutdown()
            beat.stop()
        return 0

    def shutdown(self) -> None:
        procs = [c.process for c in self.children if c.process is not None]
        for p in procs:
            if p.is_alive() and p.pid is not None:
                p.terminate()
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
            if p.is_alive():
                log.warning("child did not stop in time; killing (stacks dumped)", pid=p.pid)
                if p.pid is not None:
                    os.kill(p.pid, signal.SIGUSR1)  # faulthandler: where is it stuck?
                    p.join(1.0)
                p.kill()
                p.join()
        log.info("all children stopped")


def serve(settings: Settings) -> int:
    sup = Supervisor(settings)

    def handler(signum: int, _frame: FrameType | None) -> None:
        log.info("stopping", signal=signal.Signals(signum).name)
        sup.stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return sup.run()
