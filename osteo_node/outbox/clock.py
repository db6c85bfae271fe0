"""The outbox's notion of time: naive UTC, the form stored in the outbox tables."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    """Naive UTC now (the form stored in the outbox tables)."""
    return datetime.now(UTC).replace(tzinfo=None)
