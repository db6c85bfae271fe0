"""The index of received studies, series and instances (SQLAlchemy Core, SQLite or PostgreSQL).

Series bookkeeping for the job queue: ``last_received_at`` (quiet-time detection),
``generation`` (bumped when an instance arrives after a job was queued for the current
generation) and ``job_generation`` (the last generation a job was queued for). See
:mod:`osteo_node.queue.jobs`.

Retention (:mod:`osteo_node.retention`) deletes the spool files of settled series and says so
here: ``instances.purged_at`` (the file is gone), ``series.purged_at`` (none of the series'
files is left) and ``series.spool_bytes`` (bytes of the series still in the spool). The rows
stay, but a purged instance does not count as present: when it is received again it is
*revived* (``purged_at`` cleared) like a new instance, so the series starts a new generation
and is analysed again.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Float,
    ForeignKey,
    Integer,
    String,
    Table,
    bindparam,
    case,
    func,
    select,
    update,
)

from osteo_node.store.db import METADATA
from osteo_node.store.sql import insert_ignore

studies = Table(
    "studies", METADATA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("study_instance_uid", String(64), nullable=False, unique=True),
    Column("created_at", Float, nullable=False),
)

series = Table(
    "series", METADATA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("study_id", Integer, ForeignKey("studies.id"), nullable=False, index=True),
    Column("series_instance_uid", String(64), nullable=False, unique=True),
    Column("modality", String(16), nullable=False),
    Column("first_received_at", Float, nullable=False),
    Column("last_received_at", Float, nullable=False, index=True),
    Column("instance_count", Integer, nullable=False, default=0),
    Column("generation", Integer, nullable=False, default=1),
    Column("job_generation", Integer, nullable=False, default=0),
    #: bytes of the series' instance files still in the spool (retention subtracts what it
    #: deletes)
    Column("spool_bytes", BigInteger, nullable=False, default=0, server_default="0"),
    #: when retention deleted the last of the series' spool files (None: files present)
    Column("purged_at", Float, nullable=True, index=True),
)

instances = Table(
    "instances", METADATA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("series_id", Integer, ForeignKey("series.id"), nullable=False, index=True),
    Column("sop_instance_uid", String(64), nullable=False, unique=True),
    Column("sop_class_uid", String(64), nullable=False),
    Column("transfer_syntax_uid", String(64), nullable=False),
    Column("instance_number", Integer, nullable=True),
    Column("path", String(400), nullable=False),  # relative to the spool folder
    Column("size", Integer, nullable=False),
    Column("calling_ae", String(16), nullable=False, default=""),
    Column("received_at", Float, nullable=False),
    #: when retention deleted the instance's spool file (None: the file is in the spool)
    Column("purged_at", Float, nullable=True),
)


@dataclass(frozen=True)
class InstanceRecord:
    """What the index keeps about one received instance (UIDs only, no patient data)."""

    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    modality: str
    instance_number: int | None
    relpath: str
    size: int
    calling_ae: str = ""


# Statements used per received instance, built once (statement construction dominates the
# cost of these tiny queries).
_SERIES_ID = select(series.c.id).where(series.c.series_instance_uid == bindparam("uid"))
_SERIES_TOUCH = (
    update(series).where(series.c.id == bindparam("sid")).values(
        last_received_at=bindparam("t"),
        instance_count=series.c.instance_count + bindparam("added"),
        spool_bytes=series.c.spool_bytes + bindparam("size"),
        purged_at=None,
        # A job was already queued for the current generation: this instance starts the next.
        generation=case(
            (series.c.job_generation >= series.c.generation, series.c.generation + 1),
            else_=series.c.generation,
        ),
    )
)


_INSTANCE_REVIVE = (
    update(instances).where(instances.c.sop_instance_uid == bindparam("uid"),
                            instances.c.purged_at.is_not(None))
    .values(series_id=bindparam("sid"), sop_class_uid=bindparam("sop_class"),
            transfer_syntax_uid=bindparam("ts"), instance_number=bindparam("number"),
            path=bindparam("path"), size=bindparam("size"), calling_ae=bindparam("ae"),
            received_at=bindparam("t"), purged_at=None)
)


def record_instance(conn: Connection, rec: InstanceRecord, now: float | None = None, *,
                    revive: bool = True) -> bool:
    """Index one instance (idempotent). Returns True when it was new.

    A new instance updates its series' receive time, count and spool bytes and, when a job was
    already queued for the current generation, starts a new generation. An instance whose file
    retention deleted counts as new when ``revive`` (its file was just stored again): its row
    points at the new file and the series starts a new generation as above (the count stays:
    it is the same instance). ``revive=False`` (a duplicate C-STORE indexed from the file
    already spooled, which retention may be deleting at that moment) leaves a purged row as
    it is.
    """
    t = time.time() if now is None else now
    series_id = conn.execute(_SERIES_ID, {"uid": rec.series_uid}).scalar()
    if series_id is None:
        insert_ignore(conn, studies, {"study_instance_uid": rec.study_uid, "created_at": t},
                      ("study_instance_uid",))
        study_id = conn.execute(
            select(studies.c.id).where(studies.c.study_instance_uid == rec.study_uid)
        ).scalar_one()
        insert_ignore(conn, series, {
            "study_id": study_id, "series_instance_uid": rec.series_uid,
            "modality": rec.modality, "first_received_at": t, "last_received_at": t,
            "instance_count": 0, "generation": 1, "job_generation": 0, "spool_bytes": 0,
        }, ("series_instance_uid",))
        series_id = conn.execute(_SERIES_ID, {"uid": rec.series_uid}).scalar_one()
    inserted = insert_ignore(conn, instances, {
        "series_id": series_id, "sop_instance_uid": rec.sop_uid,
        "sop_class_uid": rec.sop_class_uid, "transfer_syntax_uid": rec.transfer_syntax_uid,
        "instance_number": rec.instance_number, "path": rec.relpath, "size": rec.size,
        "calling_ae": rec.calling_ae, "received_at": t,
    }, ("sop_instance_uid",))
    if inserted:
        conn.execute(_SERIES_TOUCH, {"sid": series_id, "t": t, "added": 1, "size": rec.size})
        return True
    # only a duplicate gets here (no cost on the path of new instances)
    if revive and conn.execute(_INSTANCE_REVIVE, {
        "uid": rec.sop_uid, "sid": series_id, "sop_class": rec.sop_class_uid,
        "ts": rec.transfer_syntax_uid, "number": rec.instance_number, "path": rec.relpath,
        "size": rec.size, "ae": rec.calling_ae, "t": t,
    }).rowcount == 1:
        conn.execute(_SERIES_TOUCH, {"sid": series_id, "t": t, "added": 0, "size": rec.size})
        return True
    return False


def instance_known(conn: Connection, sop_uid: str) -> bool:
    """The instance is indexed and its file is in the spool (not purged)."""
    return conn.execute(
        select(instances.c.id).where(instances.c.sop_instance_uid == sop_uid,
                                     instances.c.purged_at.is_(None))
    ).first() is not None


def series_paths(conn: Connection, series_id: int, spool_root: Path) -> list[Path]:
    """Paths of a series' instances in the spool (purged ones left out), by instance number
    then SOP Instance UID."""
    rows = conn.execute(
        select(instances.c.path).where(instances.c.series_id == series_id,
                                       instances.c.purged_at.is_(None))
        .order_by(instances.c.instance_number, instances.c.sop_instance_uid)
    ).all()
    return [spool_root / r.path for r in rows]


def counts(conn: Connection) -> dict[str, int]:
    return {
        name: int(conn.execute(select(func.count()).select_from(tbl)).scalar_one())
        for name, tbl in (("studies", studies), ("series", series), ("instances", instances))
    }


def indexed_sop_uids(conn: Connection) -> set[str]:
    """SOP Instance UIDs of the indexed instances whose file is in the spool (a file found for
    a purged instance was received again: start-up reconciliation indexes it)."""
    return {r[0] for r in conn.execute(
        select(instances.c.sop_instance_uid).where(instances.c.purged_at.is_(None)))}


def iter_series(conn: Connection) -> Iterator[Any]:
    yield from conn.execute(select(series).order_by(series.c.id))
