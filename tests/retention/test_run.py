"""Retention rounds against a real spool and outbox folder (files on disk) and a real database
(SQLite and PostgreSQL), with a controllable clock (issue 14, retention): what is deleted when,
what is never deleted, and that the index says so."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from sqlalchemy import Engine, select

from osteo_node.config.sections import RetentionSettings
from osteo_node.outbox import store as outbox
from osteo_node.outbox.tables import outbox_items
from osteo_node.retention.facts import naive_utc, spool_candidates
from osteo_node.retention.policy import AGE
from osteo_node.retention.purge import Stamp, purge_series
from osteo_node.retention.run import run_once
from osteo_node.retention.tables import retention_log, retention_runs
from osteo_node.store.db import make_engine
from osteo_node.store.index import InstanceRecord, record_instance
from osteo_node.store.spool import SpoolKey
from tests.retention.support import PACS, VIEWER, Node, ct_body, result_object


@pytest.fixture
def engine(db_url: str) -> Engine:
    return make_engine(db_url)


@pytest.fixture
def node(engine: Engine, tmp_path: Path) -> Node:
    return Node(engine, tmp_path)


def _log(engine: Engine) -> list[dict[str, object]]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(
            select(retention_log).order_by(retention_log.c.id))]


def _events(stream: io.StringIO, name: str) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]
    return [e for e in lines if e.get("event") == name]


def test_a_delivered_series_and_results_are_deleted_after_their_age_and_the_index_says_so(
        node: Node, engine: Engine, log_stream: io.StringIO) -> None:
    rec = node.analyse(node.receive(3))
    node.clock.advance(1)
    assert node.deliver() == 1
    result = rec.results[0]
    result_file = node.outbox_file(result)
    assert result_file.is_file() and all(p.is_file() for p in rec.files)
    series_bytes = rec.bytes

    node.clock.advance(70)  # 71 h after receiving, 70 h after delivery: too young
    report = node.retain()
    assert report.spool.deletions == () and report.outbox.deletions == ()
    assert all(p.is_file() for p in rec.files)
    assert node.series_row(rec)["spool_bytes"] == series_bytes

    node.clock.advance(2)  # 73 h after receiving: the spool files go; results kept 168 h
    purged_at = node.clock()
    report = node.retain()
    assert [o.deletion.reason for o in report.spool_outcomes] == ["age"]
    assert not any(p.exists() for p in rec.files)
    assert not (node.spool_dir / rec.study).exists()  # empty folders removed too
    row = node.series_row(rec)
    assert (row["purged_at"], row["spool_bytes"]) == (purged_at, 0)
    assert node.instance_purged_at(rec) == {purged_at}
    assert result_file.is_file() and node.object_purged_at(result) is None

    node.clock.advance(168 - 72)  # 169 h after delivery: the result's file goes
    report = node.retain()
    assert [o.deletion.candidate.key.sop_uid for o in report.outbox_outcomes] == [result]
    assert not result_file.exists()
    assert node.object_purged_at(result) is not None

    log = _log(engine)
    assert [(r["area"], r["reason"], r["series_instance_uid"], r["sop_instance_uid"],
             r["files"]) for r in log] == [
        ("spool", "age", rec.series_uid, None, 3), ("outbox", "age", None, result, 1)]
    assert log[0]["bytes"] == series_bytes and log[0]["purged_at"] == purged_at
    with engine.connect() as conn:
        runs = conn.execute(select(retention_runs).order_by(retention_runs.c.id)).all()
    assert [(r.spool_series, r.spool_files, r.outbox_objects, r.errors) for r in runs] == [
        (0, 0, 0, 0), (1, 3, 0, 0), (0, 0, 1, 0)]
    assert all(r.finished_at is not None for r in runs)
    purged = _events(log_stream, "retention_series_purged")
    assert [(e["series_instance_uid"], e["files"], e["bytes"]) for e in purged] == [
        (rec.series_uid, 3, series_bytes)]
    assert _events(log_stream, "retention_object_purged")[0]["sop_instance_uid"] == result

    node.clock.advance(1000)  # nothing left to do, nothing done twice
    report = node.retain()
    assert report.spool.count == 0 and report.outbox.count == 0
    assert len(_log(engine)) == 2


def test_b_undelivered_results_keep_their_series_and_files(node: Node) -> None:
    waiting = node.analyse(node.receive(2))  # PACS down: retried, not delivered yet
    node.clock.advance(1)
    assert node.fail_attempt() == 1
    sending = node.analyse(node.receive(2), to=VIEWER)
    running = node.receive(2)
    node.queue(running)
    node.start(running)  # being analysed
    queued = node.receive(2)
    node.queue(queued)  # analysis queued
    receiving = node.receive(2)  # no job yet (still arriving / not quiet yet)

    node.clock.advance(1000)  # far beyond every age limit, and a size limit of ~nothing
    assert node.fail_attempt() == 1  # the waiting result: overdue, still retried
    assert len(node.claim("viewer")) == 1  # the other result is being sent right now
    report = node.retain(spool_max_total_gb=1e-9, outbox_max_total_gb=1e-9)
    assert report.spool.deletions == () and report.outbox.deletions == ()
    assert report.spool.blocked == {"analysis_pending": 2, "receiving": 1,
                                    "results_undelivered": 2}
    assert report.outbox.blocked == {"results_undelivered": 2}
    assert report.spool.over_limit > 0 and report.notes  # the warning: only unsettled data
    for rec in (waiting, sending, queued, running, receiving):
        assert all(p.is_file() for p in rec.files)
        assert node.series_row(rec)["purged_at"] is None
        assert node.instance_purged_at(rec) == {None}
    for rec in (waiting, sending):
        assert node.outbox_file(rec.results[0]).is_file()

    # PACS is back: the waiting result is delivered; its series and file go at the next round
    node.clock.advance(1)
    assert node.deliver() == 1
    node.clock.advance(169)
    report = node.retain()
    assert [o.deletion.candidate.key.series_uid for o in report.spool_outcomes] == [
        waiting.series_uid]
    assert [o.deletion.candidate.key.sop_uid for o in report.outbox_outcomes] == [
        waiting.results[0]]
    assert not any(p.exists() for p in waiting.files)
    assert node.outbox_file(sending.results[0]).is_file()


def test_c_finally_failed_ones_are_deleted_after_the_age(node: Node) -> None:
    failed_job = node.receive(2)
    node.fail_job(failed_job)  # the analysis failed for good: no results
    refused = node.analyse(node.receive(2))
    node.clock.advance(1)
    assert node.refuse_for_good() == 1  # the PACS refused the result for good
    refused_file = node.outbox_file(refused.results[0])

    node.clock.advance(70)  # 71 h: not old enough yet
    assert node.retain().spool.deletions == ()
    node.clock.advance(2)
    report = node.retain()
    assert {o.deletion.candidate.key.series_uid for o in report.spool_outcomes} == {
        failed_job.series_uid, refused.series_uid}
    for rec in (failed_job, refused):
        assert not any(p.exists() for p in rec.files)
        assert node.series_row(rec)["purged_at"] == node.clock()
    assert refused_file.is_file()  # the outbox keeps it for its own age
    node.clock.advance(168)
    node.retain()
    assert not refused_file.exists() and node.object_purged_at(refused.results[0]) is not None


def test_d_size_limit_deletes_the_oldest_settled_series_first(node: Node,
                                                              log_stream: io.StringIO) -> None:
    unsettled = node.analyse(node.receive(4, pixels=4096))  # oldest and biggest...
    node.fail_attempt(retry_in_hours=1000)  # ...and its result waits for the PACS
    node.clock.advance(1)
    oldest = node.analyse(node.receive(2, pixels=2048))
    node.clock.advance(1)
    middle = node.analyse(node.receive(2, pixels=2048))
    node.clock.advance(1)
    newest = node.analyse(node.receive(2, pixels=2048))
    assert node.deliver() == 3
    total = sum(r.bytes for r in (unsettled, oldest, middle, newest))
    assert unsettled.bytes > oldest.bytes + middle.bytes + newest.bytes

    # room for everything but about one and a half small series: the two oldest settled go
    limit = total - int(1.5 * oldest.bytes)
    report = node.retain(spool_max_age_hours=None, spool_max_total_gb=limit / 1e9)
    assert [(o.deletion.candidate.key.series_uid, o.deletion.reason)
            for o in report.spool_outcomes] == [(oldest.series_uid, "size"),
                                                 (middle.series_uid, "size")]
    assert not any(p.exists() for p in oldest.files + middle.files)
    assert all(p.is_file() for p in unsettled.files + newest.files)
    assert report.spool.over_limit == 0 and not report.notes

    # a limit below what the unsettled series alone holds: everything settled goes, the
    # unsettled series stays, and a warning says so
    report = node.retain(spool_max_age_hours=None, spool_max_total_gb=1000 / 1e9)
    assert [o.deletion.candidate.key.series_uid for o in report.spool_outcomes] == [
        newest.series_uid]
    assert all(p.is_file() for p in unsettled.files)
    assert report.spool.over_limit == unsettled.bytes - 1000
    warned = _events(log_stream, "retention_size_limit_unreachable")
    assert warned and warned[-1]["blocked"] == {"results_undelivered": 1}
    assert warned[-1]["area"] == "spool"


def test_a_file_that_cannot_be_deleted_is_logged_kept_and_retried(
        node: Node, log_stream: io.StringIO) -> None:
    rec = node.analyse(node.receive(3))
    node.deliver()
    stuck = rec.files[1]
    stuck.unlink()
    stuck.mkdir()  # a folder where the file was: unlink fails (EISDIR), not "missing"
    (stuck / "x").write_bytes(b"")
    node.clock.advance(100)
    report = node.retain()
    assert report.errors == 1 and report.spool_outcomes[0].purged is not None
    assert not report.spool_outcomes[0].purged.complete
    assert not rec.files[0].exists() and not rec.files[2].exists() and stuck.is_dir()
    row = node.series_row(rec)
    assert row["purged_at"] is None and row["spool_bytes"] > 0  # not all gone
    assert node.instance_purged_at(rec) == {None, node.clock()}
    failed = _events(log_stream, "retention_delete_failed")
    assert failed[0]["series_instance_uid"] == rec.series_uid
    assert str(stuck) not in log_stream.getvalue()  # UIDs only, no paths

    (stuck / "x").unlink()
    stuck.rmdir()  # fixed; the next round completes the series
    node.clock.advance(1)
    report = node.retain()
    assert report.errors == 0
    row = node.series_row(rec)
    assert row["purged_at"] == node.clock() and row["spool_bytes"] == 0


def test_dry_run_deletes_and_records_nothing(node: Node, engine: Engine) -> None:
    rec = node.analyse(node.receive(2))
    node.deliver()
    node.clock.advance(200)
    report = node.retain(dry_run=True)
    assert len(report.spool.deletions) == 1 and len(report.outbox.deletions) == 1
    assert all(p.is_file() for p in rec.files)
    assert node.outbox_file(rec.results[0]).is_file()
    assert _log(engine) == []
    with engine.connect() as conn:
        assert conn.execute(select(retention_runs)).all() == []


def test_a_series_that_changed_since_the_plan_is_kept(node: Node) -> None:
    """An instance of the series arrives between planning and deleting: the series is
    re-checked right before its files go, and kept (its new generation is to be analysed)."""
    rec = node.analyse(node.receive(2))
    node.deliver()
    node.clock.advance(100)
    with node.engine.connect() as conn:
        planned = spool_candidates(conn)[0]
    assert planned.settled
    sop = generate_uid()
    key = SpoolKey(rec.study, rec.series_uid, sop)
    stored = node.spool.store(key, (ct_body(rec.study, rec.series_uid, sop),))
    with node.engine.begin() as conn:
        record_instance(conn, InstanceRecord(rec.study, rec.series_uid, sop, CTImageStorage,
                                             ExplicitVRLittleEndian, "CT", None,
                                             str(key.relpath()), stored.size), node.clock())
    assert purge_series(node.engine, node.spool_dir, planned.key,
                        Stamp(node.clock(), AGE)) is None
    assert all(p.is_file() for p in [*rec.files, stored.path])


def test_a_pending_rejection_note_of_a_later_generation_keeps_the_series(node: Node) -> None:
    """The note withdrawing generation 1's results belongs to the series too (its outbox
    job_id is "<job id>/rejection"): undelivered, it keeps the series' files."""
    rec = node.analyse(node.receive(2))
    node.deliver()
    more = node.receive(1, study=rec.study)  # another series of the study: irrelevant
    node.analyse(more)
    sop = generate_uid()
    key = SpoolKey(rec.study, rec.series_uid, sop)
    stored = node.spool.store(key, (ct_body(rec.study, rec.series_uid, sop),))
    with node.engine.begin() as conn:  # a late instance: generation 2
        record_instance(conn, InstanceRecord(rec.study, rec.series_uid, sop, CTImageStorage,
                                             ExplicitVRLittleEndian, "CT", None,
                                             str(key.relpath()), stored.size), node.clock())
    second = node.analyse(rec)
    assert second.job is not None and second.job.generation == 2
    note = result_object(rec.study)
    outbox.enqueue(node.engine, node.outbox_dir, [note], [PACS],
                   job_id=f"{second.job.id}/rejection", kind="kos",
                   now=naive_utc(node.clock()))
    node.clock.advance(1)
    assert node.claim()  # everything is being sent; then all of it but the note arrives
    with node.engine.begin() as conn:
        conn.execute(outbox_items.update().where(
            outbox_items.c.sop_instance_uid != str(note.SOPInstanceUID)).values(
            state="sent", sent_at=naive_utc(node.clock()), claim_token=None))
    node.clock.advance(100)
    report = node.retain()
    assert [o.deletion.candidate.key.series_uid for o in report.spool_outcomes] == [
        more.series_uid]
    assert all(p.is_file() for p in [*rec.files, stored.path])


def test_a_round_told_to_stop_deletes_nothing_more(node: Node, engine: Engine) -> None:
    rec = node.analyse(node.receive(2))
    node.deliver()
    node.clock.advance(100)
    report = run_once(engine, RetentionSettings(), node.spool_dir, node.outbox_dir,
                      node.clock, stopping=lambda: True)
    assert len(report.spool.deletions) == 1 and report.spool_outcomes == []
    assert all(p.is_file() for p in rec.files)
    with engine.connect() as conn:
        assert conn.execute(select(retention_runs.c.finished_at)).scalar_one() is not None
