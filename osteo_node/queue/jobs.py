"""The job queue (table ``jobs``): one analysis job per (series, generation).

States::

    queued --claim--> running --> done | not_analysable | failed | no_analyser
       ^                 |
       '--- error with attempts left, or lease expired / node restarted (recover) ---'

* A series is complete after ``series_quiet_seconds`` without a new instance; the assembler
  then queues exactly one job for its current generation (unique (series_id, generation)).
* An instance arriving after a job was queued starts a new generation of the series
  (:func:`osteo_node.store.index.record_instance`), so the series is analysed again with all its
  instances once it is quiet again; the later job's results supersede the earlier ones.
* Claiming is ``SELECT ... FOR UPDATE SKIP LOCKED`` then ``UPDATE`` on PostgreSQL (workers on
  several hosts never take the same job nor wait for each other), ``UPDATE ... WHERE id = :id
  AND state = 'queued'`` with a rowcount check on SQLite. A running job carries
  a claim token and a lease extended by heart-beats; only the holder of the current token can
  finish it, so a job is completed at most once even if a stalled worker wakes up late.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    Float,
    ForeignKey,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    func,
    insert,
    or_,
    select,
    update,
)

from osteo_node.store.db import METADATA
from osteo_node.store.index import series, studies

QUEUED = "queued"
RUNNING = "running"
DONE = "done"
NOT_ANALYSABLE = "not_analysable"  # analysed, refused with a reason (tilt, no spine, ...)
FAILED = "failed"
NO_ANALYSER = "no_analyser"
STATES = (QUEUED, RUNNING, DONE, NOT_ANALYSABLE, FAILED, NO_ANALYSER)
FINAL_STATES = (DONE, NOT_ANALYSABLE, FAILED, NO_ANALYSER)

jobs = Table(
    "jobs", METADATA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("series_id", Integer, ForeignKey("series.id"), nullable=False),
    Column("generation", Integer, nullable=False),
    Column("state", String(16), nullable=False, index=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_error", Text, nullable=True),
    Column("analyser", String(128), nullable=True),
    Column("objects", Integer, nullable=False, default=0),
    Column("instance_count", Integer, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("started_at", Float, nullable=True),
    Column("finished_at", Float, nullable=True),
    Column("heartbeat_at", Float, nullable=True),
    Column("lease_until", Float, nullable=True),
    Column("claim_token", String(36), nullable=True),
    Column("worker", String(64), nullable=True),
    UniqueConstraint("series_id", "generation", name="uq_jobs_series_generation"),
)


@dataclass(frozen=True)
class ClaimedJob:
    id: int
    series_id: int
    generation: int
    attempts: int
    claim_token: str
    series_uid: str
    study_uid: str
    modality: str

    @property
    def key(self) -> str:
        """Stable per (series, generation): a re-run produces the same result UIDs."""
        return job_key(self.series_uid, self.generation)


def job_key(series_uid: str, generation: int = 1) -> str:
    """The key from which a job's result UIDs derive (also used by ``analyze --dicom-out``)."""
    return f"{series_uid}/g{generation}"


def queue_complete_series(engine: Engine, quiet_seconds: float, now: float | None = None
                          ) -> list[int]:
    """Queue a job for every series quiet for ``quiet_seconds`` whose current generation has
    none yet. Returns the new job ids. Safe to run concurrently (conditional update + unique
    constraint)."""
    t = time.time() if now is None else now
    cutoff = t - quiet_seconds
    created: list[int] = []
    with engine.connect() as conn:
        due = conn.execute(
            select(series.c.id, series.c.generation, series.c.instance_count)
            .where(series.c.generation > series.c.job_generation,
                   series.c.last_received_at <= cutoff)
            .order_by(series.c.last_received_at)
        ).all()
    for row in due:
        with engine.begin() as conn:
            claimed = conn.execute(
                update(series)
                .where(series.c.id == row.id, series.c.generation == row.generation,
                       series.c.job_generation < row.generation,
                       series.c.last_received_at <= cutoff)
                .values(job_generation=row.generation)
            ).rowcount
            if claimed != 1:
                continue  # a new instance arrived meanwhile, or another assembler won
            job_id = conn.execute(
                insert(jobs).values(series_id=row.id, generation=row.generation, state=QUEUED,
                                    attempts=0, objects=0, instance_count=row.instance_count,
                                    created_at=t)
                .returning(jobs.c.id)
            ).scalar_one()
            created.append(int(job_id))
    return created


def claim_next(engine: Engine, worker: str, lease_seconds: float, now: float | None = None
               ) -> ClaimedJob | None:
    """Atomically take the oldest queued job (or a running one whose lease expired).

    PostgreSQL: ``SELECT ... FOR UPDATE SKIP LOCKED`` picks a row no other claimer holds, so
    workers on several hosts never wait for each other nor take the same job. SQLite (one
    writer at a time): a conditional ``UPDATE`` with a rowcount check on a few candidates."""
    t = time.time() if now is None else now
    if engine.dialect.name == "postgresql":
        return _claim_skip_locked(engine, worker, lease_seconds, t)
    with engine.connect() as conn:
        candidates = conn.execute(
            select(jobs.c.id).where(_claimable(t)).order_by(jobs.c.id).limit(8)
        ).scalars().all()
    for job_id in candidates:
        with engine.begin() as conn:
            claimed = _take(conn, job_id, worker, lease_seconds, t)
        if claimed is not None:
            return claimed
    return None


def _claimable(t: float) -> Any:
    return or_(jobs.c.state == QUEUED, and_(jobs.c.state == RUNNING, jobs.c.lease_until < t))


def _claim_skip_locked(engine: Engine, worker: str, lease_seconds: float, t: float
                       ) -> ClaimedJob | None:
    with engine.begin() as conn:
        job_id = conn.execute(
            select(jobs.c.id).where(_claimable(t)).order_by(jobs.c.id).limit(1)
            .with_for_update(skip_locked=True)
        ).scalar()
        if job_id is None:
            return None
        return _take(conn, int(job_id), worker, lease_seconds, t)


def _take(conn: Connection, job_id: int, worker: str, lease_seconds: float, t: float
          ) -> ClaimedJob | None:
    """Claim ``job_id`` if it is still claimable (None: another worker got it first)."""
    token = str(uuid.uuid4())
    n = conn.execute(
        update(jobs).where(jobs.c.id == job_id, _claimable(t)).values(
            state=RUNNING, claim_token=token, worker=worker[:64],
            attempts=jobs.c.attempts + 1, started_at=t, heartbeat_at=t,
            lease_until=t + lease_seconds, finished_at=None)
    ).rowcount
    if n != 1:
        return None
    row = conn.execute(
        select(jobs.c.id, jobs.c.series_id, jobs.c.generation, jobs.c.attempts,
               series.c.series_instance_uid, series.c.modality,
               studies.c.study_instance_uid)
        .join(series, series.c.id == jobs.c.series_id)
        .join(studies, studies.c.id == series.c.study_id)
        .where(jobs.c.id == job_id)
    ).one()
    return ClaimedJob(id=row.id, series_id=row.series_id, generation=row.generation,
                      attempts=row.attempts, claim_token=token,
                      series_uid=row.series_instance_uid, study_uid=row.study_instance_uid,
                      modality=row.modality)


def _owned(job: ClaimedJob) -> Any:
    return and_(jobs.c.id == job.id, jobs.c.claim_token == job.claim_token,
                jobs.c.state == RUNNING)


def heartbeat(engine: Engine, job: ClaimedJob, lease_seconds: float,
              now: float | None = None) -> bool:
    """Extend the lease; False when the job is no longer ours."""
    t = time.time() if now is None else now
    with engine.begin() as conn:
        return bool(conn.execute(
            update(jobs).where(_owned(job)).values(heartbeat_at=t, lease_until=t + lease_seconds)
        ).rowcount == 1)


def finish(engine: Engine, job: ClaimedJob, state: str, *, error: str | None = None,
           analyser: str | None = None, objects: int = 0, now: float | None = None) -> bool:
    """Move a claimed job to a final state (see FINAL_STATES). False: not ours any more (its
    lease expired and it was re-claimed), so the caller must discard its result."""
    if state not in FINAL_STATES:
        raise ValueError(f"not a final state: {state}")
    t = time.time() if now is None else now
    with engine.begin() as conn:
        return bool(conn.execute(
            update(jobs).where(_owned(job)).values(
                state=state, finished_at=t, last_error=error, analyser=analyser,
                objects=objects, lease_until=None)
        ).rowcount == 1)


def retry_or_fail(engine: Engine, job: ClaimedJob, error: str, max_attempts: int,
                  now: float | None = None) -> str:
    """After an error: back to ``queued`` while attempts are left, else ``failed``."""
    t = time.time() if now is None else now
    state = FAILED if job.attempts >= max_attempts else QUEUED
    with engine.begin() as conn:
        conn.execute(update(jobs).where(_owned(job)).values(
            state=state, last_error=error[:4000], lease_until=None,
            finished_at=t if state == FAILED else None))
    return state


def release_worker(engine: Engine, worker: str, now: float | None = None) -> list[int]:
    """The jobs a worker that died was running go back to ``queued`` at once (the supervisor
    saw it die; no need to wait for the lease). Returns their ids. The attempt counter keeps
    the job from killing workers forever (see ``worker.runner``)."""
    t = time.time() if now is None else now
    with engine.begin() as conn:
        ids = [int(r[0]) for r in conn.execute(
            select(jobs.c.id).where(jobs.c.state == RUNNING, jobs.c.worker == worker[:64]))]
        if ids:
            conn.execute(update(jobs).where(jobs.c.id.in_(ids), jobs.c.state == RUNNING)
                         .values(state=QUEUED, lease_until=None, claim_token=None,
                                 heartbeat_at=t,
                                 last_error="its worker stopped during the job; re-queued"))
    return ids


def recover_interrupted(engine: Engine, max_attempts: int,
                        interrupted: Callable[[str | None], bool] = lambda _worker: True
                        ) -> tuple[int, int]:
    """At start-up, before this host's workers run: the jobs left ``running`` by workers that
    are gone go back to ``queued`` (or ``failed`` when they already used all attempts).
    ``interrupted(worker name)`` says which workers are gone: with several hosts on one
    database, only this host's dead workers (the others' jobs are taken over when their lease
    expires). Returns (requeued, failed)."""
    with engine.begin() as conn:
        running = conn.execute(select(jobs.c.id, jobs.c.worker, jobs.c.attempts)
                               .where(jobs.c.state == RUNNING)).all()
        gone = [r for r in running if interrupted(r.worker)]
        exhausted = [r.id for r in gone if r.attempts >= max_attempts]
        again = [r.id for r in gone if r.attempts < max_attempts]
        failed = requeued = 0
        if exhausted:
            failed = conn.execute(
                update(jobs).where(jobs.c.id.in_(exhausted), jobs.c.state == RUNNING)
                .values(state=FAILED, last_error="interrupted too often (node stopped during job)",
                        lease_until=None, finished_at=time.time())
            ).rowcount
        if again:
            requeued = conn.execute(
                update(jobs).where(jobs.c.id.in_(again), jobs.c.state == RUNNING)
                .values(state=QUEUED, lease_until=None, claim_token=None,
                        last_error="interrupted (node stopped during job); re-queued")
            ).rowcount
    return int(requeued), int(failed)


def state_counts(conn: Connection) -> dict[str, int]:
    rows = conn.execute(select(jobs.c.state, func.count()).group_by(jobs.c.state)).all()
    out = dict.fromkeys(STATES, 0)
    out.update({r[0]: int(r[1]) for r in rows})
    return out


def recent_jobs(conn: Connection, limit: int = 20, states: tuple[str, ...] = STATES
                ) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(jobs.c.id, jobs.c.state, jobs.c.generation, jobs.c.attempts, jobs.c.last_error,
               jobs.c.analyser, jobs.c.objects, jobs.c.instance_count, jobs.c.created_at,
               jobs.c.started_at, jobs.c.finished_at, series.c.series_instance_uid,
               series.c.modality)
        .join(series, series.c.id == jobs.c.series_id)
        .where(jobs.c.state.in_(states))
        .order_by(jobs.c.id.desc()).limit(limit)
    ).all()
    return [dict(r._mapping) for r in rows]
