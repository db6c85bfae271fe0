"""The persisted outbox: enqueue result objects and move delivery items through their states.

All functions take an :class:`~sqlalchemy.Engine` and run their own short transactions
(SQLAlchemy Core, portable to PostgreSQL). Time is passed in (``now``, naive UTC) so the state
machine is testable without sleeping. The work is done in:

- :mod:`.enqueue`: ``enqueue`` (Part-10 file written durably, then one item per destination);
- :mod:`.claims`: ``claim_due`` under a lease, ``mark_sent`` / ``mark_failed_attempt``,
  ``recover_interrupted``;
- :mod:`.queries`: ``counts``, ``list_items``, ``next_due_at`` and the operator actions
  ``retry_failed`` / ``purge_sent``.

This module gathers them under one name (``from osteo_node.outbox import store``).
"""

from __future__ import annotations

from osteo_node.outbox.claims import (
    ClaimedItem,
    claim_due,
    mark_failed_attempt,
    mark_sent,
    recover_interrupted,
)
from osteo_node.outbox.clock import utcnow
from osteo_node.outbox.enqueue import EnqueueResult, ObjectLike, enqueue
from osteo_node.outbox.files import OutboxInputError
from osteo_node.outbox.queries import (
    ItemInfo,
    counts,
    list_items,
    next_due_at,
    purge_sent,
    retry_failed,
)

__all__ = [
    "ClaimedItem",
    "EnqueueResult",
    "ItemInfo",
    "ObjectLike",
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
