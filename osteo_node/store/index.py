"""The index of received studies, series and instances (SQLAlchemy Core, SQLite or PostgreSQL).

Series bookkeeping for the job queue: ``last_received_at`` (quiet-time detection),
``generation`` (bumped when an instance arrives after a job was queued for the current
generation) and ``job_generation`` (the last generation a job was queued for). See
:mod:`osteo_node.queue.jobs`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Engine,
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


def create_tables(engine: Engine) -> None:
    """Create the index tables if missing (see also :func:`osteo_node.store.schema`)."""
    METADATA.create_all(engine, tables=[studies, series, instances], checkfirst=True)


# Statements used per received instance, built once (statement construction dominates the
# cost of these tiny queries).
_SERIES_ID = select(series.c.id).where(series.c.series_instance_uid == bindparam("uid"))
_SERIES_TOUCH = (
    update(series).where(series.c.id == bindparam("sid")).values(
        last_received_at=bindparam("t"),
        instance_count=series.c.instance_count + 1,
        # A job was already queued for the current generation: this instance starts the next.
        generation=case(
            (series.c.job_generation >= series.c.generation, series.c.generation + 1),
            else_=series.c.generation,
        ),
    )
)


def record_instance(conn: Connection, rec: InstanceRecord, now: float | None = None) -> bool:
    """Index one instance (idempotent). Returns True when it was new.

    A new instance updates its series' receive time and count and, when a job was already
    queued for the current generation, starts a new generation.
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
            "instance_count": 0, "generation": 1, "job_generation": 0,
        }, ("series_instance_uid",))
        series_id = conn.execute(_SERIES_ID, {"uid": rec.series_uid}).scalar_one()
    inserted = insert_ignore(conn, instances, {
        "series_id": series_id, "sop_instance_uid": rec.sop_uid,
        "sop_class_uid": rec.sop_class_uid, "transfer_syntax_uid": rec.transfer_syntax_uid,
        "instance_number": rec.instance_number, "path": rec.relpath, "size": rec.size,
        "calling_ae": rec.calling_ae, "received_at": t,
    }, ("sop_instance_uid",))
    if inserted:
        conn.execute(_SERIES_TOUCH, {"sid": series_id, "t": t})
    return inserted


def instance_known(conn: Connection, sop_uid: str) -> bool:
    return conn.execute(
        select(instances.c.id).where(instances.c.sop_instance_uid == sop_uid)
    ).first() is not None


def series_paths(conn: Connection, series_id: int, spool_root: Path) -> list[Path]:
    """Paths of a series' instances, by instance number then SOP Instance UID."""
    rows = conn.execute(
        select(instances.c.path).where(instances.c.series_id == series_id)
        .order_by(instances.c.instance_number, instances.c.sop_instance_uid)
    ).all()
    return [spool_root / r.path for r in rows]


def counts(conn: Connection) -> dict[str, int]:
    return {
        name: int(conn.execute(select(func.count()).select_from(tbl)).scalar_one())
        for name, tbl in (("studies", studies), ("series", series), ("instances", instances))
    }


def indexed_sop_uids(conn: Connection) -> set[str]:
    return {r[0] for r in conn.execute(select(instances.c.sop_instance_uid))}


def iter_series(conn: Connection) -> Iterator[Any]:
    yield from conn.execute(select(series).order_by(series.c.id))
