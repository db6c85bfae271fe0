"""The persisted outbox: enqueue result objects and move delivery items through their states.

All functions take an :class:`~sqlalchemy.Engine` and run their own short transactions
(SQLAlchemy Core, portable to PostgreSQL). Time is passed in (``now``, naive UTC) so the state
machine is testable without sleeping.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import structlog
from pydicom.dataset import Dataset
from sqlalchemy import ColumnElement, Engine, and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError

from osteo_node.outbox.files import (
    EncodedObject,
    OutboxInputError,
    encode_object,
    relative_path,
    write_durably,
)
from osteo_node.outbox.policy import ALL_KINDS, Destination, RetryPolicy
from osteo_node.outbox.tables import (
    FAILED,
    PENDING,
    SENDING,
    SENT,
    outbox_items,
    outbox_objects,
)

log = structlog.get_logger(__name__)

ObjectLike = Dataset | str | os.PathLike[str]


def utcnow() -> datetime:
    """Naive UTC now (the form stored in the outbox tables)."""
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class EnqueueResult:
    """What :func:`enqueue` did for one object."""

    sop_instance_uid: str
    kind: str
    path: Path | None  # the Part-10 file in the outbox folder (None: no destination takes it)
    new_destinations: tuple[str, ...]  # items created now
    existing_destinations: tuple[str, ...]  # items that were already there (not duplicated)


@dataclass(frozen=True)
class ClaimedItem:
    """A delivery item claimed by a sender (state ``sending``)."""

    id: int
    sop_instance_uid: str
    destination: str
    attempts: int  # including the attempt now being made
    sop_class_uid: str
    transfer_syntax_uid: str
    path: Path
    claim_token: str


@dataclass(frozen=True)
class ItemInfo:
    """A delivery item as shown by status commands."""

    id: int
    sop_instance_uid: str
    destination: str
    kind: str
    job_id: str | None
    state: str
    attempts: int
    next_attempt_at: datetime
    last_status: int | None
    last_error: str | None
    updated_at: datetime
    sent_at: datetime | None


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


def claim_due(
    engine: Engine,
    outbox_dir: Path,
    destinations: Iterable[str],
    now: datetime,
    *,
    limit: int = 200,
    lease_s: float = 900.0,
) -> list[ClaimedItem]:
    """Claim due items for the named destinations: ``pending`` ones whose time has come and
    ``sending`` ones whose lease expired (a sender died). Each claim counts as an attempt."""
    names = list(destinations)
    if not names or limit <= 0:
        return []
    token = secrets.token_hex(16)
    stale = now - timedelta(seconds=lease_s)
    due = and_(
        outbox_items.c.destination.in_(names),
        or_(
            and_(outbox_items.c.state == PENDING, outbox_items.c.next_attempt_at <= now),
            and_(outbox_items.c.state == SENDING, outbox_items.c.claimed_at < stale),
        ),
    )
    with engine.begin() as conn:
        ids = list(
            conn.execute(
                select(outbox_items.c.id)
                .where(due)
                .order_by(outbox_items.c.next_attempt_at, outbox_items.c.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            ).scalars()
        )
        if not ids:
            return []
        conn.execute(
            update(outbox_items)
            .where(and_(outbox_items.c.id.in_(ids), due))
            .values(
                state=SENDING,
                claim_token=token,
                claimed_at=now,
                attempts=outbox_items.c.attempts + 1,
                updated_at=now,
            )
        )
        rows = conn.execute(
            select(
                outbox_items.c.id,
                outbox_items.c.sop_instance_uid,
                outbox_items.c.destination,
                outbox_items.c.attempts,
                outbox_objects.c.sop_class_uid,
                outbox_objects.c.transfer_syntax_uid,
                outbox_objects.c.rel_path,
            )
            .join_from(outbox_items, outbox_objects)
            .where(outbox_items.c.claim_token == token)
            .order_by(outbox_items.c.id)
        ).all()
    return [
        ClaimedItem(
            id=r.id,
            sop_instance_uid=r.sop_instance_uid,
            destination=r.destination,
            attempts=r.attempts,
            sop_class_uid=r.sop_class_uid,
            transfer_syntax_uid=r.transfer_syntax_uid,
            path=Path(outbox_dir) / r.rel_path,
            claim_token=token,
        )
        for r in rows
    ]


def mark_sent(
    engine: Engine, item: ClaimedItem, now: datetime, status: int = 0, note: str | None = None
) -> bool:
    """Record a successful C-STORE. False if the claim was lost (lease expired, re-claimed)."""
    with engine.begin() as conn:
        res = conn.execute(
            update(outbox_items)
            .where(_still_claimed(item))
            .values(
                state=SENT,
                sent_at=now,
                updated_at=now,
                last_status=status,
                last_error=note,
                claim_token=None,
            )
        )
    return res.rowcount == 1


def mark_failed_attempt(
    engine: Engine,
    item: ClaimedItem,
    now: datetime,
    policy: RetryPolicy,
    error: str,
    *,
    status: int | None = None,
    permanent: bool = False,
) -> str | None:
    """Record a failed attempt: back to ``pending`` after the backoff delay, or ``failed`` when
    attempts are exhausted (or the failure is permanent). Returns the new state, or None if the
    claim was lost."""
    give_up = permanent or policy.exhausted(item.attempts)
    values: dict[str, object] = {
        "last_error": error[:2000],
        "last_status": status,
        "updated_at": now,
        "claim_token": None,
    }
    if give_up:
        values["state"] = FAILED
    else:
        delay = policy.next_delay(item.attempts, key=f"{item.sop_instance_uid}/{item.destination}")
        values["state"] = PENDING
        values["next_attempt_at"] = now + timedelta(seconds=delay)
    with engine.begin() as conn:
        res = conn.execute(update(outbox_items).where(_still_claimed(item)).values(**values))
    if res.rowcount != 1:
        return None
    return str(values["state"])


def _still_claimed(item: ClaimedItem) -> ColumnElement[bool]:
    return and_(
        outbox_items.c.id == item.id,
        outbox_items.c.state == SENDING,
        outbox_items.c.claim_token == item.claim_token,
    )


def recover_interrupted(engine: Engine, now: datetime | None = None) -> int:
    """Put every ``sending`` item back to ``pending`` (due now). Call at sender start-up, when no
    other sender process runs; the claim counted as an attempt stays counted."""
    t = now or utcnow()
    with engine.begin() as conn:
        res = conn.execute(
            update(outbox_items)
            .where(outbox_items.c.state == SENDING)
            .values(state=PENDING, claim_token=None, next_attempt_at=t, updated_at=t)
        )
    return int(res.rowcount)


def retry_failed(
    engine: Engine, destination: str | None = None, now: datetime | None = None
) -> int:
    """Operator action: give ``failed`` items a fresh set of attempts (same object, same UID)."""
    t = now or utcnow()
    cond = outbox_items.c.state == FAILED
    if destination is not None:
        cond = and_(cond, outbox_items.c.destination == destination)
    with engine.begin() as conn:
        res = conn.execute(
            update(outbox_items)
            .where(cond)
            .values(state=PENDING, attempts=0, next_attempt_at=t, updated_at=t)
        )
    return int(res.rowcount)


def next_due_at(engine: Engine, destinations: Iterable[str]) -> datetime | None:
    """Earliest ``next_attempt_at`` of the pending items for these destinations."""
    names = list(destinations)
    if not names:
        return None
    with engine.connect() as conn:
        value = conn.execute(
            select(func.min(outbox_items.c.next_attempt_at)).where(
                and_(outbox_items.c.state == PENDING, outbox_items.c.destination.in_(names))
            )
        ).scalar()
    return value if isinstance(value, datetime) else None


def counts(engine: Engine) -> dict[str, dict[str, int]]:
    """``{destination: {state: number of items}}`` for status displays."""
    out: dict[str, dict[str, int]] = {}
    with engine.connect() as conn:
        rows = conn.execute(
            select(outbox_items.c.destination, outbox_items.c.state, func.count()).group_by(
                outbox_items.c.destination, outbox_items.c.state
            )
        ).all()
    for dest, state, n in rows:
        out.setdefault(dest, {})[state] = int(n)
    return out


def list_items(
    engine: Engine,
    state: str | None = None,
    sop_instance_uid: str | None = None,
    limit: int = 100,
) -> list[ItemInfo]:
    """Items, most recently updated first (for status output and tests)."""
    q = select(
        outbox_items.c.id,
        outbox_items.c.sop_instance_uid,
        outbox_items.c.destination,
        outbox_objects.c.kind,
        outbox_objects.c.job_id,
        outbox_items.c.state,
        outbox_items.c.attempts,
        outbox_items.c.next_attempt_at,
        outbox_items.c.last_status,
        outbox_items.c.last_error,
        outbox_items.c.updated_at,
        outbox_items.c.sent_at,
    ).join_from(outbox_items, outbox_objects)
    if state is not None:
        q = q.where(outbox_items.c.state == state)
    if sop_instance_uid is not None:
        q = q.where(outbox_items.c.sop_instance_uid == sop_instance_uid)
    q = q.order_by(outbox_items.c.updated_at.desc(), outbox_items.c.id.desc()).limit(limit)
    with engine.connect() as conn:
        return [ItemInfo(**r._asdict()) for r in conn.execute(q).all()]


def purge_sent(
    engine: Engine, outbox_dir: Path, older_than: timedelta, now: datetime | None = None
) -> int:
    """Delete the files of objects whose items are all ``sent`` for longer than ``older_than``.

    The rows stay, so enqueueing the same object again still creates no duplicate; an object
    enqueued later for a new destination gets its file written again. Returns files removed."""
    cutoff = (now or utcnow()) - older_than
    not_done = (
        select(outbox_items.c.sop_instance_uid)
        .where(or_(outbox_items.c.state != SENT, outbox_items.c.sent_at > cutoff))
        .distinct()
    )
    with engine.connect() as conn:
        rels = conn.execute(
            select(outbox_objects.c.rel_path).where(
                outbox_objects.c.sop_instance_uid.not_in(not_done)
            )
        ).scalars()
        removed = 0
        for rel in rels:
            path = Path(outbox_dir) / rel
            if path.is_file():
                path.unlink()
                removed += 1
    return removed


__all__ = [
    "ClaimedItem",
    "EnqueueResult",
    "ItemInfo",
    "OutboxInputError",
    "claim_due",
    "counts",
    "enqueue",
    "list_items",
    "mark_failed_attempt",
    "mark_sent",
    "next_due_at",
    "purge_sent",
    "recover_interrupted",
    "retry_failed",
    "utcnow",
]
