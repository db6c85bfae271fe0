"""The background index writer: batches, retries while the database is busy, loses nothing."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from pydicom.uid import generate_uid
from sqlalchemy import func, select

from osteo_node.store.db import make_engine
from osteo_node.store.index import InstanceRecord, instances, series
from osteo_node.store.index_writer import IndexWriter
from osteo_node.store.schema import create_node_tables


def _records(n: int) -> list[InstanceRecord]:
    st, se = generate_uid(), generate_uid()
    return [InstanceRecord(study_uid=st, series_uid=se, sop_uid=generate_uid(),
                           sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
                           transfer_syntax_uid="1.2.840.10008.1.2.1", modality="CT",
                           instance_number=i + 1, relpath=f"x/{i}.dcm", size=10,
                           calling_ae="SCANNER") for i in range(n)]


def _count(engine, table) -> int:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def test_rows_are_written_in_the_background_and_flush_waits(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'n.db'}")
    create_node_tables(engine)
    writer = IndexWriter(engine, max_batch=16)
    writer.start()
    for i, rec in enumerate(_records(100)):
        writer.submit(rec, 1000.0 + i)
    assert writer.flush(30)
    assert writer.pending() == 0
    assert _count(engine, instances) == 100
    with engine.connect() as conn:
        assert conn.execute(select(series.c.instance_count)).scalar_one() == 100
    assert writer.stop(5)


def test_a_locked_database_delays_rows_but_loses_none(tmp_path: Path) -> None:
    db = tmp_path / "n.db"
    engine = make_engine(f"sqlite:///{db}")
    create_node_tables(engine)
    writer = IndexWriter(engine, max_backoff_s=0.2)
    writer.start()
    other = sqlite3.connect(db, isolation_level=None, timeout=0)
    other.execute("BEGIN IMMEDIATE")
    try:
        for rec in _records(5):
            writer.submit(rec, 1.0)
        assert not writer.flush(1.0)  # busy: nothing committed yet
        assert writer.pending() == 5
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert writer.flush(60)
    assert _count(engine, instances) == 5
    assert writer.stop(5)


def test_stop_writes_what_is_queued(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'n.db'}")
    create_node_tables(engine)
    writer = IndexWriter(engine)
    writer.start()
    for rec in _records(20):
        writer.submit(rec, 1.0)
    assert writer.stop(30)
    assert _count(engine, instances) == 20
