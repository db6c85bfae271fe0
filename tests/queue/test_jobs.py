from __future__ import annotations

import threading

import pytest
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from sqlalchemy import Engine, select

from osteo_node.queue import jobs as jq
from osteo_node.store.db import make_engine
from osteo_node.store.index import InstanceRecord, record_instance


@pytest.fixture
def engine(db_url: str) -> Engine:
    return make_engine(db_url)


def _add(engine: Engine, series_uid: str, n: int, t: float) -> None:
    with engine.begin() as conn:
        for _ in range(n):
            sop = generate_uid()
            record_instance(conn, InstanceRecord("1.2.3", series_uid, sop, CTImageStorage,
                                                 ExplicitVRLittleEndian, "CT", None,
                                                 f"x/{sop}.dcm", 1), t)


def _states(engine: Engine) -> list[tuple[int, str]]:
    with engine.connect() as conn:
        return [(r.generation, r.state) for r in
                conn.execute(select(jq.jobs).order_by(jq.jobs.c.id))]


def test_job_queued_once_after_quiet_time(engine: Engine) -> None:
    s = generate_uid()
    _add(engine, s, 3, 100.0)
    assert jq.queue_complete_series(engine, 30, now=120.0) == []  # not quiet yet
    created = jq.queue_complete_series(engine, 30, now=131.0)
    assert len(created) == 1
    assert jq.queue_complete_series(engine, 30, now=500.0) == []  # exactly once
    assert _states(engine) == [(1, "queued")]


def test_late_instance_starts_a_new_generation(engine: Engine) -> None:
    s = generate_uid()
    _add(engine, s, 2, 100.0)
    jq.queue_complete_series(engine, 10, now=111.0)
    _add(engine, s, 1, 200.0)
    assert jq.queue_complete_series(engine, 10, now=205.0) == []
    assert len(jq.queue_complete_series(engine, 10, now=211.0)) == 1
    assert _states(engine) == [(1, "queued"), (2, "queued")]


def test_concurrent_assemblers_queue_once(db_url: str, engine: Engine) -> None:
    for _ in range(5):
        _add(engine, generate_uid(), 2, 100.0)
    results: list[list[int]] = []
    barrier = threading.Barrier(4)

    def run() -> None:
        e = make_engine(db_url)
        barrier.wait()
        results.append(jq.queue_complete_series(e, 1, now=200.0))

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(len(r) for r in results) == 5
    assert len(_states(engine)) == 5


def test_concurrent_workers_claim_each_job_once(db_url: str, engine: Engine) -> None:
    for _ in range(12):
        _add(engine, generate_uid(), 1, 100.0)
    jq.queue_complete_series(engine, 1, now=200.0)
    claimed: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(4)

    def work(i: int) -> None:
        e = make_engine(db_url)
        barrier.wait()
        while (job := jq.claim_next(e, f"w{i}", 60)) is not None:
            with lock:
                claimed.append(job.id)
            assert jq.finish(e, job, jq.DONE)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == sorted(set(claimed)) and len(claimed) == 12
    assert {s for _, s in _states(engine)} == {"done"}


def test_expired_lease_is_taken_over_and_stale_worker_cannot_finish(engine: Engine) -> None:
    _add(engine, generate_uid(), 1, 100.0)
    jq.queue_complete_series(engine, 1, now=200.0)
    first = jq.claim_next(engine, "a", lease_seconds=10, now=300.0)
    assert first is not None and first.attempts == 1
    assert jq.claim_next(engine, "b", 10, now=305.0) is None  # lease still valid
    assert jq.heartbeat(engine, first, 10, now=308.0)
    assert jq.claim_next(engine, "b", 10, now=317.0) is None  # extended to 318
    second = jq.claim_next(engine, "b", 10, now=319.0)
    assert second is not None and second.id == first.id and second.attempts == 2
    assert not jq.heartbeat(engine, first, 10, now=320.0)
    assert not jq.finish(engine, first, jq.DONE)  # the stale worker's result is discarded
    assert jq.finish(engine, second, jq.DONE)
    assert not jq.finish(engine, second, jq.DONE)  # completes once
    assert _states(engine) == [(1, "done")]


def test_recover_interrupted_and_retry_limits(engine: Engine) -> None:
    for _ in range(2):
        _add(engine, generate_uid(), 1, 100.0)
    jq.queue_complete_series(engine, 1, now=200.0)
    a = jq.claim_next(engine, "w", 60)
    b = jq.claim_next(engine, "w", 60)
    assert a is not None and b is not None
    assert jq.recover_interrupted(engine, max_attempts=3) == (2, 0)
    a2 = jq.claim_next(engine, "w", 60)
    assert a2 is not None
    assert jq.retry_or_fail(engine, a2, "boom", max_attempts=2) == jq.FAILED  # 2nd attempt
    b2 = jq.claim_next(engine, "w", 60)
    assert b2 is not None and b2.attempts == 2
    assert jq.recover_interrupted(engine, max_attempts=2) == (0, 1)
    with engine.connect() as conn:
        assert jq.state_counts(conn)["failed"] == 2
        failures = jq.recent_jobs(conn, 10, (jq.FAILED,))
    assert {f["last_error"] for f in failures} == {
        "boom", "interrupted too often (node stopped during job)"}
