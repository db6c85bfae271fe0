"""The index after retention deleted a series' spool files (issue 14, retention): purged
instances do not count as present, an instance received again is revived like a new one (new
generation, analysed again) while a duplicate indexed from a spooled copy is not, start-up
reconciliation indexes a file received again, and filing survives retention removing the
series folder. Real SQLite and PostgreSQL, real files."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from sqlalchemy import Engine, select, update

from osteo_node.queue.jobs import queue_complete_series
from osteo_node.store.db import make_engine
from osteo_node.store.index import (
    InstanceRecord,
    indexed_sop_uids,
    instance_known,
    instances,
    record_instance,
    series,
    series_paths,
)
from osteo_node.store.reconcile import reconcile_spool
from osteo_node.store.spool import Spool, SpoolKey


@pytest.fixture
def engine(db_url: str) -> Engine:
    return make_engine(db_url)


def _record(study: str, ser: str, sop: str, size: int = 10) -> InstanceRecord:
    return InstanceRecord(study, ser, sop, CTImageStorage, ExplicitVRLittleEndian, "CT", 1,
                          f"{study}/{ser}/{sop}.dcm", size)


def _series_row(engine: Engine) -> tuple[int, int, int, int, float | None]:
    with engine.connect() as conn:
        r = conn.execute(select(series)).one()
    return r.instance_count, r.generation, r.job_generation, r.spool_bytes, r.purged_at


def _purge_all(engine: Engine, at: float) -> None:
    """What retention records once it deleted every file of the series."""
    with engine.begin() as conn:
        conn.execute(update(instances).values(purged_at=at))
        conn.execute(update(series).values(purged_at=at, spool_bytes=0))


def test_spool_bytes_follow_the_instances(engine: Engine) -> None:
    st, se = generate_uid(), generate_uid()
    with engine.begin() as conn:
        record_instance(conn, _record(st, se, "1.1", 100), 10.0)
        record_instance(conn, _record(st, se, "1.2", 50), 11.0)
        record_instance(conn, _record(st, se, "1.2", 50), 12.0)  # duplicate: not counted
    assert _series_row(engine) == (2, 1, 0, 150, None)


def test_instance_received_again_after_purge_is_revived_and_starts_a_generation(
        engine: Engine) -> None:
    st, se = generate_uid(), generate_uid()
    with engine.begin() as conn:
        for sop in ("1.1", "1.2"):
            record_instance(conn, _record(st, se, sop, 100), 10.0)
    assert queue_complete_series(engine, 5, now=20.0)  # generation 1 analysed
    _purge_all(engine, 1000.0)
    spool = Path("/spool")
    with engine.connect() as conn:
        assert series_paths(conn, 1, spool) == []
        assert indexed_sop_uids(conn) == set()
        assert not instance_known(conn, "1.1")
    assert queue_complete_series(engine, 5, now=2000.0) == []  # nothing new: no job

    with engine.begin() as conn:
        # a duplicate indexed from a spooled copy (retention may be deleting it) revives nothing
        assert not record_instance(conn, _record(st, se, "1.1", 100), 2000.0, revive=False)
    assert _series_row(engine) == (2, 1, 1, 0, 1000.0)

    with engine.begin() as conn:  # the file was stored again
        assert record_instance(conn, _record(st, se, "1.1", 120), 2001.0)
        assert not record_instance(conn, _record(st, se, "1.1", 120), 2002.0)  # now a duplicate
    # same instance: the count stays; a new generation; the series has files again
    assert _series_row(engine) == (2, 2, 1, 120, None)
    with engine.connect() as conn:
        assert [p.name for p in series_paths(conn, 1, spool)] == ["1.1.dcm"]
        assert instance_known(conn, "1.1") and not instance_known(conn, "1.2")
        row = conn.execute(select(instances).where(instances.c.sop_instance_uid == "1.1")).one()
        assert (row.purged_at, row.size, row.received_at) == (None, 120, 2001.0)
    jobs = queue_complete_series(engine, 5, now=2010.0)
    assert len(jobs) == 1  # analysed again


def _tiny_ct(st: str, se: str, sop: str) -> bytes:
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality, ds.InstanceNumber = st, se, "CT", 1
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()[128:]


def test_reconcile_indexes_a_file_received_again_after_purge(tmp_path: Path,
                                                              engine: Engine) -> None:
    """Received again after the purge, the node stopped before its row was written: the next
    start finds the file and revives the row (the series is analysed again)."""
    spool = Spool(tmp_path / "spool")
    spool.recover()
    st, se, sop = generate_uid(), generate_uid(), generate_uid()
    key = SpoolKey(st, se, sop)
    with engine.begin() as conn:
        record_instance(conn, _record(st, se, sop), 10.0)
    queue_complete_series(engine, 5, now=20.0)
    _purge_all(engine, 1000.0)
    assert reconcile_spool(engine, spool) == 0  # nothing in the spool: nothing to do
    spool.store(key, (_tiny_ct(st, se, sop),))  # received again
    assert reconcile_spool(engine, spool) == 1
    with engine.connect() as conn:
        assert indexed_sop_uids(conn) == {sop}
    count, generation, job_generation, size, purged_at = _series_row(engine)
    assert (count, generation, job_generation, purged_at) == (1, 2, 1, None)
    assert size == spool.path_for(key).stat().st_size


class RacingSpool(Spool):
    """Retention removes the empty series folder right after the spool made it, before the
    instance is linked into it (the window between ``_make_parent`` and ``os.link``)."""

    removed = 0

    def _make_parent(self, final: Path) -> None:
        super()._make_parent(final)
        if self.removed == 0:
            final.parent.rmdir()
            final.parent.parent.rmdir()
            self.removed += 1


def test_store_makes_the_series_folder_again_when_retention_removed_it(tmp_path: Path
                                                                       ) -> None:
    spool = RacingSpool(tmp_path / "spool", slot_batch=4)
    spool.recover()
    key = SpoolKey("1.2.3", "1.2.3.4", "1.2.3.4.5")
    stored = spool.store(key, (b"DICM", b"abc"))
    assert spool.removed == 1
    assert stored.created and stored.path.read_bytes()[128:] == b"DICMabc"
    assert [k for k, _ in spool.iter_instances()] == [key]
