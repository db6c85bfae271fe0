"""A node's state for retention tests, made with the node's own functions: series received
into a real spool (files on disk) and index, jobs queued / claimed / finished through the job
queue, results enqueued in the real outbox (files on disk) and their deliveries claimed and
recorded as sent or failed. Time is a controllable :class:`Clock` (no sleeping)."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from sqlalchemy import Engine, select

from osteo_node.config.sections import RetentionSettings
from osteo_node.outbox import store as outbox
from osteo_node.outbox.policy import Destination, RetryPolicy
from osteo_node.outbox.tables import outbox_objects
from osteo_node.queue import jobs as jq
from osteo_node.retention.facts import naive_utc
from osteo_node.retention.run import RunReport, run_once
from osteo_node.store.index import InstanceRecord, instances, record_instance, series
from osteo_node.store.spool import Spool, SpoolKey

HOUR = 3600.0
T0 = 1_800_000_000.0  # 2027-01-15, epoch seconds
PACS = Destination("pacs", "PACS", "127.0.0.1", 104)
VIEWER = Destination("viewer", "VIEWER", "127.0.0.1", 105)


@dataclass
class Clock:
    """Epoch seconds that move only when a test says so."""

    t: float = T0

    def __call__(self) -> float:
        return self.t

    def advance(self, hours: float) -> float:
        self.t += hours * HOUR
        return self.t


def ct_body(study: str, ser: str, sop: str, pixels: int = 512) -> bytes:
    """``DICM`` + file meta + data set of a small CT instance (as a C-STORE would store it)."""
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = study, ser, "CT"
    ds.Rows, ds.Columns, ds.BitsAllocated = 1, pixels // 2, 16
    ds.PixelData = b"\x01\x00" * (pixels // 2)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()[128:]


def result_object(study: str) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.StudyInstanceUID, ds.Modality = study, "OT"
    return ds


@dataclass
class Received:
    """A series in the spool and the index (and, once analysed, its job and results)."""

    study: str
    series_uid: str
    files: list[Path]
    bytes: int  # of the files as received
    series_id: int = 0
    job: jq.ClaimedJob | None = None
    results: list[str] = field(default_factory=list)  # SOP Instance UIDs in the outbox


@dataclass
class Node:
    """Spool, outbox folder and database of a node under test."""

    engine: Engine
    root: Path
    clock: Clock = field(default_factory=Clock)

    def __post_init__(self) -> None:
        self.spool = Spool(self.spool_dir, slot_batch=4)
        self.spool.recover()

    @property
    def spool_dir(self) -> Path:
        return self.root / "spool"

    @property
    def outbox_dir(self) -> Path:
        return self.root / "outbox"

    # -- receiving and analysing ------------------------------------------------------------
    def receive(self, n: int = 3, pixels: int = 512, study: str | None = None) -> Received:
        """``n`` instances of a new series stored in the spool and indexed now."""
        st, se = study or generate_uid(), generate_uid()
        files = []
        with self.engine.begin() as conn:
            for _ in range(n):
                sop = generate_uid()
                key = SpoolKey(st, se, sop)
                stored = self.spool.store(key, (ct_body(st, se, sop, pixels),))
                record_instance(conn, InstanceRecord(
                    st, se, sop, CTImageStorage, ExplicitVRLittleEndian, "CT", None,
                    str(key.relpath()), stored.size, "STORESCU"), self.clock())
                files.append(stored.path)
            sid = conn.execute(select(series.c.id).where(
                series.c.series_instance_uid == se)).scalar_one()
        return Received(st, se, files, sum(p.stat().st_size for p in files), sid)

    def queue(self, rec: Received) -> None:
        """The series is quiet: the assembler queues its job."""
        assert jq.queue_complete_series(self.engine, 0, now=self.clock())

    def start(self, rec: Received) -> jq.ClaimedJob:
        """A worker claims the series' job (running); it must be the oldest queued one."""
        job = jq.claim_next(self.engine, "test-worker", 600, now=self.clock())
        assert job is not None and job.series_uid == rec.series_uid
        rec.job = job
        return job

    def analyse(self, rec: Received, results: int = 1, to: Destination = PACS) -> Received:
        """Queue, claim and finish the series' job with ``results`` objects in the outbox for
        the destination ``to``."""
        self.queue(rec)
        job = self.start(rec)
        objs = [result_object(rec.study) for _ in range(results)]
        if objs:
            outbox.enqueue(self.engine, self.outbox_dir, objs, [to], job_id=job.id,
                           kind="sc", now=naive_utc(self.clock()))
        rec.results = [str(o.SOPInstanceUID) for o in objs]
        assert jq.finish(self.engine, job, jq.DONE, analyser="test", objects=len(objs),
                         now=self.clock())
        return rec

    def fail_job(self, rec: Received) -> None:
        """The series' analysis fails for good (its only attempt)."""
        self.queue(rec)
        job = self.start(rec)
        assert jq.retry_or_fail(self.engine, job, "RuntimeError in test", 1,
                                now=self.clock()) == jq.FAILED

    # -- delivering ---------------------------------------------------------------------------
    def claim(self, destination: str = "pacs") -> list[outbox.ClaimedItem]:
        """A sender claims the due results for ``destination`` (they are being sent)."""
        return outbox.claim_due(self.engine, self.outbox_dir, [destination],
                                naive_utc(self.clock()))

    def deliver(self) -> int:
        """PACS takes every due result."""
        items = self.claim()
        for it in items:
            assert outbox.mark_sent(self.engine, it, naive_utc(self.clock()))
        return len(items)

    def refuse_for_good(self) -> int:
        """Every due result ends ``failed`` (given up)."""
        items = self.claim()
        for it in items:
            assert outbox.mark_failed_attempt(
                self.engine, it, naive_utc(self.clock()), RetryPolicy(), "refused",
                status=0xA900, permanent=True) == "failed"
        return len(items)

    def fail_attempt(self, retry_in_hours: float = 0.1) -> int:
        """PACS is down: every due result goes back to ``pending``, for another attempt in
        ``retry_in_hours``."""
        delay = retry_in_hours * HOUR
        items = self.claim()
        for it in items:
            assert outbox.mark_failed_attempt(
                self.engine, it, naive_utc(self.clock()),
                RetryPolicy(base_delay_s=delay, max_delay_s=delay), "no association"
            ) == "pending"
        return len(items)

    # -- retention ----------------------------------------------------------------------------
    def retain(self, dry_run: bool = False, **limits: float | None) -> RunReport:
        settings = RetentionSettings(**{"spool_max_age_hours": 72.0,
                                        "outbox_max_age_hours": 168.0, **limits})
        return run_once(self.engine, settings, self.spool_dir, self.outbox_dir, self.clock,
                        dry_run=dry_run)

    # -- what the index says -----------------------------------------------------------------
    def series_row(self, rec: Received) -> dict[str, object]:
        with self.engine.connect() as conn:
            return dict(conn.execute(select(series).where(series.c.id == rec.series_id))
                        .one()._mapping)

    def instance_purged_at(self, rec: Received) -> set[float | None]:
        with self.engine.connect() as conn:
            return set(conn.execute(select(instances.c.purged_at).where(
                instances.c.series_id == rec.series_id)).scalars())

    def object_purged_at(self, sop_uid: str) -> object:
        with self.engine.connect() as conn:
            return conn.execute(select(outbox_objects.c.purged_at).where(
                outbox_objects.c.sop_instance_uid == sop_uid)).scalar_one()

    def outbox_file(self, sop_uid: str) -> Path:
        with self.engine.connect() as conn:
            rel = conn.execute(select(outbox_objects.c.rel_path).where(
                outbox_objects.c.sop_instance_uid == sop_uid)).scalar_one()
        return self.outbox_dir / rel
