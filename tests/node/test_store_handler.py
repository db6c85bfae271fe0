"""The listener's C-STORE path (in-process listener, pynetdicom SCU on 127.0.0.1): the instance
is acknowledged once its file is written, fsync'ed and filed; the index row follows from the
background index writer (no database lock on the C-STORE path, so a busy database does not
stall a sender), and copies of one SOP instance keep the first one, in the spool and in the
index.

The data sets are small synthetic CT images: these tests are about ordering and duplicates, not
about image content (the real-data ingest tests are in tests/integration/test_node_dicom.py).
"""

from __future__ import annotations

import io
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE as PyAE
from sqlalchemy import select

from osteo_node.store.index import instances, series
from osteo_node.store.spool import Spool, SpoolKey, sealed_complete
from tests.node.support import CALLER, free_port, node_config, running_listener, wait_until


def small_ct(study: str, series_uid: str, sop: str, fill: int, number: int = 1) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series_uid
    ds.Modality, ds.InstanceNumber = "CT", number
    ds.Rows = ds.Columns = 16
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.PixelData = np.full((16, 16), fill, dtype=np.int16).tobytes()
    return ds


def send(port: int, datasets: list[Dataset]) -> list[int]:
    """C-STORE ``datasets`` on one association; the status of each (-1: no response)."""
    ae = PyAE(ae_title=CALLER)
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title="OSTEO_NODE")
    assert assoc.is_established
    try:
        out = []
        for ds in datasets:
            rsp = assoc.send_c_store(ds)
            out.append(int(rsp.Status) if "Status" in rsp else -1)
        return out
    finally:
        assoc.release()


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[Any, int]]:
    port = free_port()
    with running_listener(node_config(tmp_path, port), tmp_path) as listener:
        yield listener, port


def _rows(listener: Any) -> list[Any]:
    assert listener.indexer.flush(30), "index writer did not catch up"
    with listener.engine.connect() as conn:
        return list(conn.execute(select(instances)))


def test_busy_database_does_not_stall_the_sender(node: tuple[Any, int], tmp_path: Path) -> None:
    """While another process holds the SQLite write lock, the instance reaches the spool
    (written, fsync'ed, filed) and is acknowledged; its index row is written once the lock is
    released."""
    listener, port = node
    st, se, sop = generate_uid(), generate_uid(), generate_uid()
    path = listener.spool.path_for(SpoolKey(st, se, sop))
    other = sqlite3.connect(tmp_path / "node.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another writer holds the database
    try:
        statuses = send(port, [small_ct(st, se, sop, 5)])
        assert statuses == [0x0000]  # acknowledged while the database is locked
        assert path.is_file() and sealed_complete(path)
        assert listener.indexer.pending() == 1  # the row waits for the lock
    finally:
        other.execute("ROLLBACK")
        other.close()
    rows = _rows(listener)
    assert [(r.sop_instance_uid, r.size) for r in rows] == [(sop, path.stat().st_size)]


def test_concurrent_copies_of_one_instance_are_stored_and_indexed_once(
        node: tuple[Any, int]) -> None:
    listener, port = node
    st, se = generate_uid(), generate_uid()
    sops = [generate_uid() for _ in range(10)]
    copies = [[small_ct(st, se, sop, fill=100 * k + i) for i, sop in enumerate(sops)]
              for k in range(3)]
    results: list[list[int]] = [[] for _ in copies]
    threads = [threading.Thread(target=lambda k=k: results[k].extend(send(port, copies[k])))
               for k in range(len(copies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == [[0x0000] * len(sops)] * len(copies)
    rows = {r.sop_instance_uid: r for r in _rows(listener)}
    assert sorted(rows) == sorted(sops)
    with listener.engine.connect() as conn:
        assert conn.execute(select(series.c.instance_count)).scalar_one() == len(sops)
    sent_pixels = {bytes(c[i].PixelData) for c in copies for i in range(len(sops))}
    for sop in sops:
        f = listener.spool.path_for(SpoolKey(st, se, sop))
        assert sealed_complete(f)
        assert rows[sop].size == f.stat().st_size
        assert f.read_bytes()[-512:] in sent_pixels  # one whole copy, not a mixture
    slots = listener.spool.slots_dir
    assert all(p.stat().st_size == 0 for p in slots.iterdir()), "a slot holds data"


def test_copy_already_in_the_spool_but_not_indexed_is_indexed_as_spooled(
        node: tuple[Any, int], tmp_path: Path) -> None:
    """A crash between filing and indexing: the sender's retry (here with other content) is
    acknowledged and the index describes the spooled first copy, which is kept."""
    listener, port = node
    st, se, sop = generate_uid(), generate_uid(), generate_uid()
    first = small_ct(st, se, sop, fill=1, number=7)
    spool = Spool(listener.spool.root)
    spool.recover()
    buf = io.BytesIO()
    first.save_as(buf, enforce_file_format=True)
    kept = spool.store(SpoolKey(st, se, sop), [buf.getvalue()[128:]])
    before = kept.path.read_bytes()

    assert send(port, [small_ct(st, se, sop, fill=2, number=8)]) == [0x0000]

    assert kept.path.read_bytes() == before
    (row,) = _rows(listener)
    assert (row.sop_instance_uid, row.instance_number, row.size) == (sop, 7, len(before))


def test_store_request_without_affected_sop_instance_uid_is_answered_at_once(
        tmp_path: Path) -> None:
    """Issue 16 (10): a C-STORE-RQ without Affected SOP Instance UID is not a valid request;
    pynetdicom dropped it and the sender waited for its DIMSE timeout (120 s). The node now
    answers 0xC000 (cannot understand) at once."""
    import time

    from pydicom.filewriter import write_dataset
    from pynetdicom import evt
    from pynetdicom.dimse_primitives import C_STORE

    port = free_port()
    with running_listener(node_config(tmp_path, port), tmp_path):
        ae = PyAE(ae_title=CALLER)
        ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
        answers: list[Dataset] = []
        assoc = ae.associate("127.0.0.1", port, ae_title="OSTEO_NODE", evt_handlers=[
            (evt.EVT_DIMSE_RECV, lambda e: answers.append(e.message.command_set))])
        assert assoc.is_established
        try:
            req = C_STORE()
            req.MessageID = 7
            req.AffectedSOPClassUID = CTImageStorage
            req.Priority = 2
            buf = io.BytesIO()
            from pydicom.filebase import DicomBytesIO

            enc = DicomBytesIO()
            enc.is_little_endian, enc.is_implicit_VR = True, False
            write_dataset(enc, small_ct(generate_uid(), generate_uid(), generate_uid(), 1))
            buf.write(enc.getvalue())
            req.DataSet = buf  # no AffectedSOPInstanceUID
            t0 = time.monotonic()
            assoc.dimse.send_msg(req, assoc.accepted_contexts[0].context_id)
            wait_until(lambda: answers, 10, what="a C-STORE response")
            assert time.monotonic() - t0 < 5.0
            rsp = answers[0]
            assert int(rsp.CommandField) == 0x8001 and int(rsp.MessageIDBeingRespondedTo) == 7
            assert int(rsp.Status) == 0xC000
        finally:
            assoc.abort()


def test_duplicate_with_different_content_is_reported_with_what_differs(
        node: tuple[Any, int], capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 16 (11): a second copy of a SOP instance whose content differs (another patient's
    pixels under a reused UID, a re-edited header) is logged at WARNING with the keywords that
    differ, never their values; an identical copy is not."""
    _listener, port = node
    st, se, sop = generate_uid(), generate_uid(), generate_uid()
    first = small_ct(st, se, sop, fill=10)
    same = small_ct(st, se, sop, fill=10)
    other = small_ct(st, se, sop, fill=99)
    other.PatientName = "Canary^Phi"
    assert send(port, [first, same, other]) == [0, 0, 0]
    out = capsys.readouterr()
    text = out.out + out.err
    warnings = [ln for ln in text.splitlines() if "duplicate SOP instance with differ" in ln]
    assert len(warnings) == 1
    assert "PatientName" in warnings[0] and "PixelData" in warnings[0]
    assert "Canary" not in text
