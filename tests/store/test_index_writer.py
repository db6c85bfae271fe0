"""The background index writer: batches, retries while the database is busy, loses nothing."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from pydicom.uid import generate_uid
from sqlalchemy import func, select

from osteo_node.store.db import make_engine
from osteo_node.store.index import InstanceRecord, instances, series
from osteo_node.store.index_writer import IndexWriter
from osteo_node.store.schema import upgrade


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
    upgrade(engine)
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
    upgrade(engine)
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
    upgrade(engine)
    writer = IndexWriter(engine)
    writer.start()
    for rec in _records(20):
        writer.submit(rec, 1.0)
    assert writer.stop(30)
    assert _count(engine, instances) == 20


def test_spooled_copies_are_read_by_the_writer_and_a_bad_one_does_not_block_others(
        tmp_path: Path) -> None:
    """Duplicates are indexed from the spooled file's header in the writer thread; an unreadable
    file is skipped with a warning, the rows around it are written."""
    import io

    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

    from osteo_node.store.spool import Spool, SpoolKey

    engine = make_engine(f"sqlite:///{tmp_path / 'n.db'}")
    upgrade(engine)
    spool = Spool(tmp_path / "spool")
    spool.recover()
    st, se, good_uid = generate_uid(), generate_uid(), generate_uid()
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = good_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality, ds.InstanceNumber = (
        CTImageStorage, good_uid, "CT", 7)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    good = spool.store(SpoolKey(st, se, good_uid), [buf.getvalue()[128:]])
    bad_key = SpoolKey(st, se, generate_uid())
    bad = spool.path_for(bad_key)
    bad.parent.mkdir(parents=True, exist_ok=True)
    bad.write_bytes(b"not dicom at all")

    writer = IndexWriter(engine)
    writer.start()
    writer.submit_spooled(bad_key, bad, 1.0)
    writer.submit_spooled(SpoolKey(st, se, good_uid), good.path, 1.0)
    writer.submit(_records(1)[0], 1.0)
    assert writer.flush(30)
    with engine.connect() as conn:
        rows = {r.sop_instance_uid: r for r in conn.execute(select(instances))}
    assert len(rows) == 2 and bad_key.sop_uid not in rows
    assert rows[good_uid].instance_number == 7 and rows[good_uid].size == good.path.stat().st_size
    assert writer.stop(5)
