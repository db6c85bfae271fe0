"""Status queries and operator actions on the outbox (what the CLI and status output use)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine, and_, func, or_, select, update

from osteo_node.outbox.clock import utcnow
from osteo_node.outbox.tables import FAILED, PENDING, SENT, outbox_items, outbox_objects


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

    The rows stay (``purged_at`` set), so enqueueing the same object again still creates no
    duplicate; an object enqueued later for a new destination gets its file written again.
    Returns files removed. (Retention, ``osteo_node.retention``, does this by policy.)"""
    t = now or utcnow()
    cutoff = t - older_than
    not_done = (
        select(outbox_items.c.sop_instance_uid)
        .where(or_(outbox_items.c.state != SENT, outbox_items.c.sent_at > cutoff))
        .distinct()
    )
    with engine.connect() as conn:
        rows = conn.execute(
            select(outbox_objects.c.sop_instance_uid, outbox_objects.c.rel_path).where(
                outbox_objects.c.sop_instance_uid.not_in(not_done),
                outbox_objects.c.purged_at.is_(None),
            )
        ).all()
    removed = 0
    for uid, rel in rows:
        path = Path(outbox_dir) / rel
        if path.is_file():
            path.unlink()
            removed += 1
        with engine.begin() as conn:
            conn.execute(
                update(outbox_objects)
                .where(outbox_objects.c.sop_instance_uid == uid)
                .values(purged_at=t)
            )
    return removed
