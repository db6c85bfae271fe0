"""Enqueue result objects: one delivery item per (object, destination taking its kind).

The object is written as a Part-10 file (durably) before the rows pointing at it are committed
(SQLAlchemy Core, portable to PostgreSQL). Idempotent per (SOP Instance UID, destination).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import structlog
from pydicom.dataset import Dataset
from sqlalchemy import Engine, select, update
from sqlalchemy.exc import IntegrityError

from osteo_node.outbox.clock import utcnow
from osteo_node.outbox.files import (
    EncodedObject,
    OutboxInputError,
    encode_object,
    relative_path,
    write_durably,
)
from osteo_node.outbox.policy import ALL_KINDS, Destination
from osteo_node.outbox.tables import PENDING, outbox_items, outbox_objects

log = structlog.get_logger(__name__)

ObjectLike = Dataset | str | os.PathLike[str]


@dataclass(frozen=True)
class EnqueueResult:
    """What :func:`enqueue` did for one object."""

    sop_instance_uid: str
    kind: str
    path: Path | None  # the Part-10 file in the outbox folder (None: no destination takes it)
    new_destinations: tuple[str, ...]  # items created now
    existing_destinations: tuple[str, ...]  # items that were already there (not duplicated)


def enqueue(
    engine: Engine,
    outbox_dir: Path,
    objects: Iterable[ObjectLike],
    destinations: Sequence[Destination],
    *,
    job_id: str | int | None = None,
    kind: str | None = None,
    now: datetime | None = None,
) -> list[EnqueueResult]:
    """Put result objects into the outbox, one item per (object, destination taking its kind).

    ``objects``: pydicom datasets or paths of DICOM files. ``kind`` ("sr", "seg", "sc", "kos")
    decides which destinations get an object (see :attr:`Destination.kinds`); None means: derive
    it from the SOP Class UID. The object is written as a Part-10 file (durably) before its rows
    are committed. Idempotent per (SOP Instance UID, destination): enqueueing again creates no
    duplicate and never re-sends an object already sent.

    Raises :class:`OutboxInputError` for an object without valid UIDs or of unknown kind; objects
    before it in ``objects`` stay enqueued.
    """
    if kind is not None and kind not in ALL_KINDS:
        raise OutboxInputError(f"unknown result kind {kind!r}; allowed: {sorted(ALL_KINDS)}")
    names = [d.name for d in destinations]
    if len(set(names)) != len(names):
        raise ValueError(f"destination names must be unique, got {names}")
    job = None if job_id is None else str(job_id)
    results = []
    for obj in objects:
        encoded = encode_object(obj)
        done = _enqueue_one(
            engine, Path(outbox_dir), encoded, destinations, job=job, kind=kind, now=now
        )
        results.append(done)
    return results


def _enqueue_one(
    engine: Engine,
    outbox_dir: Path,
    obj: EncodedObject,
    destinations: Sequence[Destination],
    *,
    job: str | None,
    kind: str | None,
    now: datetime | None,
) -> EnqueueResult:
    explicit_kind = kind
    kind = obj.kind(explicit_kind)
    targets = [d.name for d in destinations if d.accepts(kind)]
    uid = obj.sop_instance_uid
    if not targets:
        log.info("outbox.no_destination", sop_instance_uid=uid, kind=kind)
        return EnqueueResult(uid, kind, None, (), ())
    for attempt in range(3):  # a concurrent enqueue of the same UID may win the insert race
        try:
            return _insert(engine, outbox_dir, obj, kind, targets, job=job, now=now or utcnow())
        except IntegrityError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _insert(
    engine: Engine,
    outbox_dir: Path,
    obj: EncodedObject,
    kind: str,
    targets: list[str],
    *,
    job: str | None,
    now: datetime,
) -> EnqueueResult:
    uid = obj.sop_instance_uid
    with engine.begin() as conn:
        row = conn.execute(
            select(outbox_objects.c.rel_path, outbox_objects.c.sha256).where(
                outbox_objects.c.sop_instance_uid == uid
            )
        ).first()
        existing = set(
            conn.execute(
                select(outbox_items.c.destination).where(outbox_items.c.sop_instance_uid == uid)
            ).scalars()
        )
        new = [t for t in targets if t not in existing]
        rel = Path(row.rel_path) if row is not None else relative_path(obj)
        path = outbox_dir / rel
        if row is not None and row.sha256 != obj.sha256:
            log.warning(
                "outbox.same_uid_other_content",
                sop_instance_uid=uid,
                note="keeping the object first enqueued under this SOP Instance UID",
            )
        # The file is durable before the rows that point at it are committed. A file left by a
        # crash before its row was committed is overwritten; a purged file is written again.
        if row is None or (new and not path.is_file()):
            write_durably(path, obj.data)
            if row is not None:  # retention had deleted it: it is there again
                conn.execute(update(outbox_objects)
                             .where(outbox_objects.c.sop_instance_uid == uid)
                             .values(purged_at=None))
        if row is None:
            conn.execute(
                outbox_objects.insert().values(
                    sop_instance_uid=uid,
                    sop_class_uid=obj.sop_class_uid,
                    transfer_syntax_uid=obj.transfer_syntax_uid,
                    study_instance_uid=obj.study_instance_uid,
                    series_instance_uid=obj.series_instance_uid,
                    kind=kind,
                    job_id=job,
                    rel_path=rel.as_posix(),
                    size_bytes=len(obj.data),
                    sha256=obj.sha256,
                    created_at=now,
                )
            )
        if new:
            conn.execute(
                outbox_items.insert(),
                [
                    {
                        "sop_instance_uid": uid,
                        "destination": name,
                        "state": PENDING,
                        "attempts": 0,
                        "next_attempt_at": now,
                        "created_at": now,
                        "updated_at": now,
                    }
                    for name in new
                ],
            )
    kept = tuple(t for t in targets if t in existing)
    log.info(
        "outbox.enqueued",
        sop_instance_uid=uid,
        kind=kind,
        job_id=job,
        new=new,
        already_queued=list(kept),
    )
    return EnqueueResult(uid, kind, path, tuple(new), kept)
