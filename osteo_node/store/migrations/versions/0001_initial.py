"""The node's tables as they were before migrations existed: index (studies, series,
instances), jobs, outbox (objects, items), FLS worklist and assessments, web users and audit.

A database made by an earlier version (these tables, no ``alembic_version``) is adopted by
:func:`osteo_node.store.schema.upgrade` instead of running this revision: missing tables are
created, the worklist gets the columns it lacks, then the database is stamped ``0001``.

The definitions are frozen here on purpose: later changes to the tables are new revisions.

Revision ID: 0001
Revises:
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def tables(metadata: sa.MetaData) -> list[sa.Table]:
    """The tables of this revision, declared on ``metadata`` (also used to adopt a database
    made before migrations existed)."""
    c = sa.Column
    return [
        sa.Table(
            "studies", metadata,
            c("id", sa.Integer, primary_key=True, autoincrement=True),
            c("study_instance_uid", sa.String(64), nullable=False, unique=True),
            c("created_at", sa.Float, nullable=False),
        ),
        sa.Table(
            "series", metadata,
            c("id", sa.Integer, primary_key=True, autoincrement=True),
            c("study_id", sa.Integer, sa.ForeignKey("studies.id"), nullable=False, index=True),
            c("series_instance_uid", sa.String(64), nullable=False, unique=True),
            c("modality", sa.String(16), nullable=False),
            c("first_received_at", sa.Float, nullable=False),
            c("last_received_at", sa.Float, nullable=False, index=True),
            c("instance_count", sa.Integer, nullable=False),
            c("generation", sa.Integer, nullable=False),
            c("job_generation", sa.Integer, nullable=False),
        ),
        sa.Table(
            "instances", metadata,
            c("id", sa.Integer, primary_key=True, autoincrement=True),
            c("series_id", sa.Integer, sa.ForeignKey("series.id"), nullable=False, index=True),
            c("sop_instance_uid", sa.String(64), nullable=False, unique=True),
            c("sop_class_uid", sa.String(64), nullable=False),
            c("transfer_syntax_uid", sa.String(64), nullable=False),
            c("instance_number", sa.Integer, nullable=True),
            c("path", sa.String(400), nullable=False),
            c("size", sa.Integer, nullable=False),
            c("calling_ae", sa.String(16), nullable=False),
            c("received_at", sa.Float, nullable=False),
        ),
        sa.Table(
            "jobs", metadata,
            c("id", sa.Integer, primary_key=True, autoincrement=True),
            c("series_id", sa.Integer, sa.ForeignKey("series.id"), nullable=False),
            c("generation", sa.Integer, nullable=False),
            c("state", sa.String(16), nullable=False, index=True),
            c("attempts", sa.Integer, nullable=False),
            c("last_error", sa.Text, nullable=True),
            c("analyser", sa.String(128), nullable=True),
            c("objects", sa.Integer, nullable=False),
            c("instance_count", sa.Integer, nullable=True),
            c("created_at", sa.Float, nullable=False),
            c("started_at", sa.Float, nullable=True),
            c("finished_at", sa.Float, nullable=True),
            c("heartbeat_at", sa.Float, nullable=True),
            c("lease_until", sa.Float, nullable=True),
            c("claim_token", sa.String(36), nullable=True),
            c("worker", sa.String(64), nullable=True),
            sa.UniqueConstraint("series_id", "generation", name="uq_jobs_series_generation"),
        ),
        sa.Table(
            "outbox_objects", metadata,
            c("sop_instance_uid", sa.String(64), primary_key=True),
            c("sop_class_uid", sa.String(64), nullable=False),
            c("transfer_syntax_uid", sa.String(64), nullable=False),
            c("study_instance_uid", sa.String(64), nullable=True),
            c("series_instance_uid", sa.String(64), nullable=True),
            c("kind", sa.String(8), nullable=False),
            c("job_id", sa.String(64), nullable=True, index=True),
            c("rel_path", sa.String(255), nullable=False),
            c("size_bytes", sa.BigInteger, nullable=False),
            c("sha256", sa.String(64), nullable=False),
            c("created_at", sa.DateTime, nullable=False),
        ),
        sa.Table(
            "outbox_items", metadata,
            c("id", sa.Integer, primary_key=True, autoincrement=True),
            c("sop_instance_uid", sa.String(64),
              sa.ForeignKey("outbox_objects.sop_instance_uid"), nullable=False),
            c("destination", sa.String(64), nullable=False),
            c("state", sa.String(16), nullable=False),
            c("attempts", sa.Integer, nullable=False),
            c("next_attempt_at", sa.DateTime, nullable=False),
            c("claimed_at", sa.DateTime, nullable=True),
            c("claim_token", sa.String(64), nullable=True),
            c("last_status", sa.Integer, nullable=True),
            c("last_error", sa.Text, nullable=True),
            c("created_at", sa.DateTime, nullable=False),
            c("updated_at", sa.DateTime, nullable=False),
            c("sent_at", sa.DateTime, nullable=True),
            sa.UniqueConstraint("sop_instance_uid", "destination",
                                name="uq_outbox_item_object_dest"),
            sa.CheckConstraint("state IN ('pending', 'sending', 'sent', 'failed')",
                               name="ck_outbox_item_state"),
            sa.Index("ix_outbox_items_due", "state", "next_attempt_at"),
            sa.Index("ix_outbox_items_claim", "claim_token"),
        ),
        sa.Table(
            "fls_worklist", metadata,
            c("id", sa.Integer, primary_key=True, autoincrement=True),
            c("study_instance_uid", sa.String(64), nullable=False),
            c("series_instance_uid", sa.String(64), nullable=False),
            c("patient_id", sa.String(64), nullable=False),
            c("patient_name", sa.String(324), nullable=False),
            c("patient_birth_date", sa.String(8), nullable=False),
            c("patient_sex", sa.String(16), nullable=False),
            c("study_date", sa.String(8), nullable=False),
            c("accession_number", sa.String(16), nullable=False),
            c("modality", sa.String(16), nullable=False),
            c("trigger", sa.String(16), nullable=False),
            c("osteoporosis_suspected", sa.Boolean, nullable=True),
            c("density_level", sa.String(8), nullable=True),
            c("density_hu", sa.Float, nullable=True),
            c("level_uncertain", sa.Boolean, nullable=True),
            c("max_genant_grade", sa.Integer, nullable=True),
            c("vcf_levels", sa.String(200), nullable=False),
            c("findings_summary", sa.Text, nullable=False),
            c("red_flags", sa.Text, nullable=False),
            c("vertebrae_json", sa.Text, nullable=False),
            c("created_at", sa.DateTime(timezone=True), nullable=False),
            c("updated_at", sa.DateTime(timezone=True), nullable=False),
            c("status", sa.String(20), nullable=False),
            c("status_changed_at", sa.DateTime(timezone=True), nullable=True),
            c("status_changed_by", sa.String(64), nullable=True),
            c("status_note", sa.Text, nullable=True),
            sa.UniqueConstraint("study_instance_uid", "series_instance_uid",
                                name="uq_fls_study_series"),
        ),
        sa.Table(
            "fls_assessments", metadata,
            c("id", sa.Integer, primary_key=True, autoincrement=True),
            c("study_instance_uid", sa.String(64), nullable=False, index=True),
            c("risk_category", sa.String(16), nullable=True),
            c("dxa_category", sa.String(32), nullable=True),
            c("document", sa.Text, nullable=False),
            c("stored_at", sa.DateTime(timezone=True), nullable=False),
            c("stored_by", sa.String(64), nullable=False),
        ),
        sa.Table(
            "web_users", metadata,
            c("name", sa.String(64), primary_key=True),
            c("role", sa.String(16), nullable=False),
            c("password_hash", sa.String(200), nullable=False),
            c("created_at", sa.DateTime(timezone=True), nullable=False),
        ),
        sa.Table(
            "web_audit", metadata,
            c("id", sa.Integer, primary_key=True, autoincrement=True),
            c("at", sa.DateTime(timezone=True), nullable=False, index=True),
            c("user", sa.String(64), nullable=False),
            c("action", sa.String(32), nullable=False),
            c("row_id", sa.Integer, nullable=True),
            c("detail", sa.String(200), nullable=True),
        ),
    ]


def upgrade() -> None:
    bind = op.get_bind()
    metadata = sa.MetaData()
    tables(metadata)
    metadata.create_all(bind)


def downgrade() -> None:
    bind = op.get_bind()
    metadata = sa.MetaData()
    tables(metadata)
    metadata.drop_all(bind)
