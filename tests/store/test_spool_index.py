from __future__ import annotations

import io
import os
import threading
from pathlib import Path

import pytest
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from sqlalchemy import Engine, select

from osteo_node.store.db import make_engine
from osteo_node.store.index import InstanceRecord, counts, record_instance, series
from osteo_node.store.reconcile import reconcile_spool
from osteo_node.store.spool import (
    Spool,
    SpoolKey,
    StoredFile,
    preamble_for,
    sealed_complete,
    valid_uid,
)


@pytest.fixture
def engine(db_url: str) -> Engine:
    return make_engine(db_url)


def _tiny_ct(st: str, se: str, sop: str) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality, ds.InstanceNumber = st, se, "CT", 7
    ds.Rows = ds.Columns = 1
    ds.BitsAllocated, ds.PixelData = 16, b"\x00\x00"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def _record(study: str, ser: str, sop: str) -> InstanceRecord:
    return InstanceRecord(study, ser, sop, CTImageStorage, ExplicitVRLittleEndian, "CT", 1,
                          f"{study}/{ser}/{sop}.dcm", 10)


def test_uids_are_checked_before_they_become_paths() -> None:
    assert valid_uid("1.2.840.10008.1.2")
    for bad in ("", "../etc", "1.2/3", "1." * 40, "1.2.a", "1..2"):
        assert not valid_uid(bad)
        with pytest.raises(ValueError):
            SpoolKey(bad, "1.2", "1.3")


def _dicom_body(st: str, se: str, sop: str) -> bytes:
    """``DICM`` + file meta + data set of a tiny CT instance."""
    ds = _tiny_ct(st, se, sop)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()[128:]


def test_spool_store_is_sealed_durable_and_keeps_first_copy(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", slot_batch=4)
    spool.recover()
    key = SpoolKey("1.2.3", "1.2.3.4", "1.2.3.4.5")
    first = spool.store(key, (b"DICM", b"abc", b"def"))
    assert first.created and first.size == 128 + 10
    raw = first.path.read_bytes()
    assert raw[128:] == b"DICMabcdef" and raw[:16] == b"OSTEONODE-SPOOL1"
    assert sealed_complete(first.path)
    first.path.write_bytes(raw[:-1] + b"X")  # a flipped byte breaks the seal
    assert not sealed_complete(first.path)
    first.path.write_bytes(raw)
    second = spool.store(key, (b"DICM", b"other"))
    assert not second.created and first.path.read_bytes() == raw
    assert [k for k, _ in spool.iter_instances()] == [key]
    # Only empty slots remain besides the filed instance.
    assert all(p.stat().st_size == 0 for p in (tmp_path / "spool" / ".slots").iterdir())


def test_recover_files_complete_slots_and_empties_torn_ones(tmp_path: Path) -> None:
    """What a crash between the slot fsync and the rename (or during the write) leaves."""
    spool = Spool(tmp_path / "spool", slot_batch=4)
    spool.recover()
    st, se, sop, sop2 = (generate_uid() for _ in range(4))
    body = _dicom_body(st, se, sop)
    slots = tmp_path / "spool" / ".slots"
    complete, torn = slots / "slot-a", slots / "slot-b"
    complete.write_bytes(preamble_for([body]) + body)
    body2 = _dicom_body(st, se, sop2)
    torn.write_bytes((preamble_for([body2]) + body2)[:-10])
    again = Spool(tmp_path / "spool", slot_batch=4)
    assert again.recover() == (1, 1)
    assert again.path_for(SpoolKey(st, se, sop)).read_bytes()[128:] == body
    assert torn.stat().st_size == 0
    assert not again.path_for(SpoolKey(st, se, sop2)).exists()


def test_record_instance_is_idempotent_and_bumps_generation(engine: Engine) -> None:
    st, se = generate_uid(), generate_uid()
    with engine.begin() as conn:
        assert record_instance(conn, _record(st, se, "1.1"), 100.0)
        assert not record_instance(conn, _record(st, se, "1.1"), 101.0)  # duplicate
        assert record_instance(conn, _record(st, se, "1.2"), 102.0)
    with engine.begin() as conn:
        row = conn.execute(select(series)).one()
        assert (row.instance_count, row.generation, row.job_generation,
                row.last_received_at) == (2, 1, 0, 102.0)
        conn.execute(series.update().values(job_generation=1))  # a job was queued
        assert record_instance(conn, _record(st, se, "1.3"), 103.0)
        row = conn.execute(select(series)).one()
        assert (row.instance_count, row.generation) == (3, 2)
        assert record_instance(conn, _record(st, se, "1.4"), 104.0)
        assert conn.execute(select(series.c.generation)).scalar_one() == 2  # no double bump
    with engine.connect() as conn:
        assert counts(conn) == {"studies": 1, "series": 1, "instances": 4}


def test_reconcile_indexes_spooled_files_missing_from_index(tmp_path: Path, engine: Engine
                                                            ) -> None:
    spool = Spool(tmp_path / "spool")
    st, se, sop = generate_uid(), generate_uid(), generate_uid()
    ds = _tiny_ct(st, se, sop)
    path = spool.path_for(SpoolKey(st, se, sop))
    path.parent.mkdir(parents=True)
    ds.save_as(path, enforce_file_format=True)
    (path.parent / "junk.dcm").write_bytes(b"not dicom")  # not a UID name: ignored
    assert reconcile_spool(engine, spool) == 1
    assert reconcile_spool(engine, spool) == 0
    with engine.connect() as conn:
        assert counts(conn)["instances"] == 1
    assert os.path.exists(path)


def test_concurrent_copies_of_one_instance_file_one_and_keep_it(tmp_path: Path) -> None:
    """Copies of the same SOP instance stored at the same moment (two senders): exactly one is
    filed (created), the others find it and leave it untouched; nothing is left in a slot."""
    spool = Spool(tmp_path / "spool", slot_batch=8)
    spool.recover()
    senders = 4
    for n in range(1, 16):
        key = SpoolKey("1.2.3", "1.2.3.4", f"1.2.3.4.{n}")
        bodies = [(b"DICM", f"copy {i} ".encode() * 4000) for i in range(senders)]
        start = threading.Barrier(senders)
        results: list[StoredFile | None] = [None] * senders

        def send(i: int, key: SpoolKey = key, bodies: list[tuple[bytes, bytes]] = bodies,
                 start: threading.Barrier = start,
                 results: list[StoredFile | None] = results) -> None:
            start.wait()
            results[i] = spool.store(key, bodies[i])

        threads = [threading.Thread(target=send, args=(i,)) for i in range(senders)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        done = [r for r in results if r is not None]
        assert len(done) == senders
        winners = [i for i, r in enumerate(results) if r is not None and r.created]
        assert len(winners) == 1, f"instance {n}: {len(winners)} copies filed as new"
        on_disk = spool.path_for(key).read_bytes()
        assert on_disk[128:] == b"".join(bodies[winners[0]])
        assert sealed_complete(spool.path_for(key))
        assert {r.size for r in done} == {len(on_disk)}
    assert len(list(spool.iter_instances())) == 15
    assert all(p.stat().st_size == 0 for p in (tmp_path / "spool" / ".slots").iterdir())
