"""Claims under contention (issue 14): worker processes hammering ``claim_next`` on one database
never take the same job, on SQLite and PostgreSQL; on PostgreSQL a claim skips a row another
transaction holds (``FOR UPDATE SKIP LOCKED``) instead of waiting for it."""

from __future__ import annotations

import multiprocessing as mp
import threading
import time

from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from sqlalchemy import Engine, select, update

from osteo_node.queue import jobs as jq
from osteo_node.store.db import make_engine
from osteo_node.store.index import InstanceRecord, record_instance

JOBS = 120
PROCESSES = 6


def _queue_jobs(engine: Engine, n: int) -> list[int]:
    with engine.begin() as conn:
        for _ in range(n):
            sop = generate_uid()
            record_instance(conn, InstanceRecord("1.2.3", generate_uid(), sop, CTImageStorage,
                                                 ExplicitVRLittleEndian, "CT", None,
                                                 f"x/{sop}.dcm", 1), 100.0)
    return jq.queue_complete_series(engine, 1, now=200.0)


def _claimer(url: str, name: str, start: mp.synchronize.Event, out: mp.Queue) -> None:
    """A worker process: claim and finish until nothing is left; report what it claimed."""
    engine = make_engine(url)
    start.wait(60)
    got: list[int] = []
    while (job := jq.claim_next(engine, name, 60)) is not None:
        got.append(job.id)
        if not jq.finish(engine, job, jq.DONE):
            got.append(-job.id)  # finished by someone else: must never happen
    engine.dispose()
    out.put((name, got))


def test_processes_hammering_claim_next_never_share_a_job(db_url: str) -> None:
    engine = make_engine(db_url)
    ids = _queue_jobs(engine, JOBS)
    # a few jobs are 'running' under an expired lease: claimable too, by one claimer only
    expired = ids[::10]
    with engine.begin() as conn:
        conn.execute(update(jq.jobs).where(jq.jobs.c.id.in_(expired)).values(
            state=jq.RUNNING, claim_token="gone", worker="dead:1:w0", lease_until=1.0))
    ctx = mp.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_claimer, args=(db_url, f"w{i}", start, out))
             for i in range(PROCESSES)]
    for p in procs:
        p.start()
    start.set()
    results = dict(out.get(timeout=300) for _ in procs)
    for p in procs:
        p.join(60)
    claimed = [j for got in results.values() for j in got]
    assert sorted(claimed) == sorted(ids)  # every job once; no negative (double finish)
    assert sum(1 for got in results.values() if got) >= 2  # they really competed
    with engine.connect() as conn:
        assert jq.state_counts(conn)[jq.DONE] == JOBS
        workers = conn.execute(select(jq.jobs.c.worker).where(jq.jobs.c.id.in_(expired)))
        assert all(w.startswith("w") for (w,) in workers)  # taken over from the dead one
    engine.dispose()


def test_postgresql_claim_skips_a_locked_job_instead_of_waiting(db_url: str) -> None:
    engine = make_engine(db_url)
    if engine.dialect.name != "postgresql":
        engine.dispose()
        return  # SQLite has no row locks (one writer at a time)
    first, second = _queue_jobs(engine, 2)
    got: list[jq.ClaimedJob | None] = []
    with engine.connect() as holder:
        holder.begin()
        holder.execute(select(jq.jobs.c.id).where(jq.jobs.c.id == first).with_for_update())
        t0 = time.monotonic()
        claimer = threading.Thread(target=lambda: got.append(jq.claim_next(engine, "w", 60)))
        claimer.start()
        claimer.join(20)
        waited = time.monotonic() - t0
        assert not claimer.is_alive(), "claim_next waited for the locked row"
        holder.rollback()
    assert got and got[0] is not None and got[0].id == second
    assert waited < 5
    third = jq.claim_next(engine, "w", 60)  # the lock is gone: the first job is claimable
    assert third is not None and third.id == first
    engine.dispose()
