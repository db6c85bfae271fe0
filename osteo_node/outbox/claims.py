"""Claim due delivery items under a lease and record each attempt's outcome.

A sender claims items (state ``sending``, a claim token and time); a claim counts as an attempt.
The outcome is recorded only while the claim still stands, so a sender whose lease expired (and
whose items another sender took over) cannot overwrite the newer claim. Time is passed in
(``now``, naive UTC) so the state machine is testable without sleeping.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import ColumnElement, Engine, and_, or_, select, update

from osteo_node.outbox.clock import utcnow
from osteo_node.outbox.policy import RetryPolicy
from osteo_node.outbox.tables import FAILED, PENDING, SENDING, SENT, outbox_items, outbox_objects


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
    """Record a failed attempt: back to ``pending`` after the backoff delay (capped, also beyond
    the retry window: see RetryPolicy), or ``failed`` when the failure is permanent. Returns the
    new state, or None if the claim was lost."""
    give_up = permanent
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
