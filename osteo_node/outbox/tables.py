"""Outbox tables (SQLAlchemy Core, declared on the shared :data:`osteo_node.store.db.METADATA`).

``outbox_objects``: one row per result object (keyed by SOP Instance UID), pointing at its DICOM
Part-10 file in the outbox folder. ``outbox_items``: one row per (object, destination) with the
delivery state machine::

    pending --claim--> sending --success--> sent
                          |--failure, attempts < max--> pending (next_attempt_at = now + backoff)
                          '--failure, attempts >= max or permanent--> failed
    sending (lease expired / crash) --recover--> pending      failed --retry_failed--> pending

Timestamps are naive UTC (``TIMESTAMP WITHOUT TIME ZONE`` on PostgreSQL).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from osteo_node.store.db import METADATA

PENDING = "pending"
SENDING = "sending"
SENT = "sent"
FAILED = "failed"
STATES = (PENDING, SENDING, SENT, FAILED)

outbox_objects = Table(
    "outbox_objects",
    METADATA,
    Column("sop_instance_uid", String(64), primary_key=True),
    Column("sop_class_uid", String(64), nullable=False),
    Column("transfer_syntax_uid", String(64), nullable=False),
    Column("study_instance_uid", String(64), nullable=True),
    Column("series_instance_uid", String(64), nullable=True),
    Column("kind", String(8), nullable=False),
    Column("job_id", String(64), nullable=True, index=True),
    Column("rel_path", String(255), nullable=False),
    Column("size_bytes", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("created_at", DateTime, nullable=False),
    #: when retention deleted the object's file (None: the file is in the outbox folder)
    Column("purged_at", DateTime, nullable=True, index=True),
)

outbox_items = Table(
    "outbox_items",
    METADATA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column(
        "sop_instance_uid",
        String(64),
        ForeignKey("outbox_objects.sop_instance_uid"),
        nullable=False,
    ),
    Column("destination", String(64), nullable=False),
    Column("state", String(16), nullable=False, default=PENDING),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", DateTime, nullable=False),
    Column("claimed_at", DateTime, nullable=True),
    Column("claim_token", String(64), nullable=True),
    Column("last_status", Integer, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    Column("sent_at", DateTime, nullable=True),
    UniqueConstraint("sop_instance_uid", "destination", name="uq_outbox_item_object_dest"),
    CheckConstraint(
        "state IN ('pending', 'sending', 'sent', 'failed')", name="ck_outbox_item_state"
    ),
    Index("ix_outbox_items_due", "state", "next_attempt_at"),
    Index("ix_outbox_items_claim", "claim_token"),
)

TABLES = (outbox_objects, outbox_items)
