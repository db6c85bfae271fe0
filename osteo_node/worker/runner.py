"""The worker process: claim a job, run the modality's analyser, publish, finish.

One job at a time per process; run several processes for parallelism (``queue.workers``).
A heart-beat thread extends the job's lease while the analyser runs. Analysis never runs in
the listener.
"""

from __future__ import annotations

import importlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog
from sqlalchemy import Engine
from structlog.typing import FilteringBoundLogger as BoundLogger

from osteo_node.config import Settings
from osteo_node.pipeline.registry import Analyser, analyser_for
from osteo_node.pipeline.results import AnalysisOutput
from osteo_node.queue import jobs as jq
from osteo_node.queue.worker_names import worker_name
from osteo_node.safe_errors import describe
from osteo_node.store.db import make_engine
from osteo_node.store.index import series_paths
from osteo_node.worker.publish import (
    Publisher,
    content_key,
    enqueue_objects,
    resolve_publisher,
)
from osteo_node.worker.supersede import enqueue_rejection, prior_objects, supersede
from osteo_node.worklist.store import add_from_result, withdraw

log = structlog.get_logger(__name__)

AnalyserLookup = Callable[[str], Analyser | None]


def lookup_from_settings(settings: Settings) -> AnalyserLookup:
    """Analysers from ``settings.analysers`` (explicit overrides) else the registry.

    One analyser instance per modality and worker process, reused for later jobs (loading a
    model for every series would dominate short analyses).
    """
    overrides = dict(settings.analysers)
    cache: dict[str, Analyser | None] = {}

    def create(modality: str) -> Analyser | None:
        spec = overrides.get(modality)
        if spec is None:
            return analyser_for(modality)
        module_name, _, attr = spec.partition(":")
        factory = getattr(importlib.import_module(module_name), attr)
        analyser: Analyser = factory()
        return analyser

    def lookup(modality: str) -> Analyser | None:
        key = modality.upper()
        if key not in cache:
            cache[key] = create(key)
        return cache[key]

    return lookup


@dataclass(frozen=True)
class WorkerContext:
    settings: Settings
    engine: Engine
    lookup: AnalyserLookup
    publish: Publisher
    name: str


class _Heartbeat:
    def __init__(self, ctx: WorkerContext, job: jq.ClaimedJob) -> None:
        self.ctx, self.job = ctx, job
        self.stop = threading.Event()
        self.lost = False
        self.thread = threading.Thread(target=self._run, name=f"heartbeat-{job.id}", daemon=True)

    def _run(self) -> None:
        lease = self.ctx.settings.queue.job_lease_seconds
        while not self.stop.wait(max(0.5, lease / 3)):
            try:
                alive = jq.heartbeat(self.ctx.engine, self.job, lease)
            except Exception as exc:  # noqa: BLE001 - a database hiccup: keep beating
                log.warning("heartbeat failed; retrying", job_id=self.job.id,
                            error=describe(exc))
                continue
            if not alive:
                self.lost = True
                log.warning("job lease lost", job_id=self.job.id)
                return

    def __enter__(self) -> _Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        self.thread.join()


def _fail_crashing(ctx: WorkerContext, job: jq.ClaimedJob, bound: BoundLogger) -> str:
    """Re-claimed after its lease expired this often: the analysis keeps killing its worker
    (crash, out of memory). Stop here instead of killing workers forever."""
    jq.finish(ctx.engine, job, jq.FAILED,
              error=f"worker stopped during this job {job.attempts - 1} times "
              "(crash or out of memory?)")
    bound.error("job failed: its worker stopped during it too often")
    return jq.FAILED


def _load_analyser(ctx: WorkerContext, job: jq.ClaimedJob, bound: BoundLogger) -> Analyser | str:
    """The job's analyser, or the job's new state when there is none or it cannot load."""
    try:
        analyser = ctx.lookup(job.modality)
    except Exception as exc:  # noqa: BLE001 - a broken analyser import fails the job, not us
        bound.error("analyser could not be loaded", error=describe(exc))
        return jq.retry_or_fail(ctx.engine, job, f"analyser load failed: {describe(exc)}",
                                ctx.settings.queue.max_job_attempts)
    if analyser is None:
        jq.finish(ctx.engine, job, jq.NO_ANALYSER,
                  error=f"no analyser registered for modality {job.modality}")
        bound.info("job finished: no analyser for this modality")
        return jq.NO_ANALYSER
    return analyser


def _analyse_and_enqueue(ctx: WorkerContext, job: jq.ClaimedJob, analyser: Analyser,
                         paths: list[Path], bound: BoundLogger) -> tuple[AnalysisOutput, int] | str:
    """Analyse under a heart-beat, publish, enqueue for the destinations and the worklist:
    the output and the number of objects enqueued, or the job's state when it failed or was
    taken over."""
    s = ctx.settings
    try:
        with _Heartbeat(ctx, job) as hb:
            bound.info("analysis started", analyser=analyser.name, instances=len(paths))
            output = analyser.analyse(paths)
            key = content_key(job.key, output)
            objects = ctx.publish(output, key, s.results)
            # a later generation of the series supersedes the earlier one's results
            priors = prior_objects(ctx.engine, job) if objects else []
            objects, note = supersede(objects, priors, key)
            if hb.lost:
                bound.warning("job was taken over by another worker; result discarded")
                return "lost"
            n = enqueue_objects(ctx.engine, s.storage.outbox_dir, s.destinations, objects,
                                job.id)
            if note is not None:
                n += enqueue_rejection(ctx.engine, s.storage.outbox_dir, s.destinations, note,
                                       priors, job.id)
            # After the outbox: a worklist failure must not hold back the results for PACS (a
            # retry of the job re-enqueues nothing and updates the same worklist row).
            if s.results.worklist and output.result.status == "analysed":
                row_id = add_from_result(ctx.engine, output)
                if row_id is None:  # not positive: an earlier generation may have made a row
                    withdraw(ctx.engine, output)
    except Exception as exc:  # noqa: BLE001 - record any analysis failure in the job
        # the type and place only: a message may quote header values (patient data)
        bound.error("analysis failed", error=describe(exc))
        return jq.retry_or_fail(ctx.engine, job, describe(exc), s.queue.max_job_attempts)
    return output, n


def process_job(ctx: WorkerContext, job: jq.ClaimedJob) -> str:
    """Run one claimed job to a final (or re-queued) state; returns that state. Never raises
    for an analysis error: the error is recorded in the job."""
    s = ctx.settings
    bound = log.bind(job_id=job.id, series_instance_uid=job.series_uid, modality=job.modality,
                     generation=job.generation, attempt=job.attempts)
    if job.attempts > s.queue.max_job_attempts:
        return _fail_crashing(ctx, job, bound)
    analyser = _load_analyser(ctx, job, bound)
    if isinstance(analyser, str):
        return analyser
    with ctx.engine.connect() as conn:
        paths = series_paths(conn, job.series_id, s.storage.spool_dir)
    t0 = time.perf_counter()
    analysed = _analyse_and_enqueue(ctx, job, analyser, paths, bound)
    if isinstance(analysed, str):
        return analysed
    output, n = analysed
    refused = output.result.status == "not_analysable"
    state = jq.NOT_ANALYSABLE if refused else jq.DONE
    # the refusal reason is the analyser's own text (rules, geometry, UIDs), never a header value
    reason = (output.result.reason or "not analysable")[:4000] if refused else None
    if not jq.finish(ctx.engine, job, state, error=reason, analyser=analyser.name, objects=n):
        bound.warning("job was taken over by another worker; result discarded")
        return "lost"
    bound.info("job done", analyser=analyser.name, status=output.result.status, state=state,
               reason=reason, objects=n, seconds=round(time.perf_counter() - t0, 2))
    return state


def run_worker(settings: Settings, stop: threading.Event, index: int = 0,
               lookup: AnalyserLookup | None = None, publish: Publisher | None = None) -> None:
    """Claim and process jobs until ``stop`` is set."""
    engine = make_engine(settings.storage.database_url)
    ctx = WorkerContext(
        settings=settings, engine=engine, lookup=lookup or lookup_from_settings(settings),
        publish=publish or resolve_publisher(settings.publisher),
        name=worker_name(settings.node.name, index),
    )
    log.info("worker started", worker=ctx.name)
    try:
        while not stop.is_set():
            job = jq.claim_next(engine, ctx.name, settings.queue.job_lease_seconds)
            if job is None:
                stop.wait(settings.queue.poll_seconds)
                continue
            process_job(ctx, job)
    finally:
        engine.dispose()
