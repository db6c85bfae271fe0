"""Who did what in the web application (``web_audit`` table): every view of a patient's page,
every status change, every sign-in. Rows hold the user name and the worklist row id, not the
patient's name or ID (the row says who the patient is, for those allowed to see it)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Column, DateTime, Engine, Integer, String, Table, insert, select

from osteo_node.store.db import METADATA

web_audit = Table(
    "web_audit", METADATA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False, index=True),
    Column("user", String(64), nullable=False),
    Column("action", String(32), nullable=False),  # login, view_row, set_status, view_image
    Column("row_id", Integer, nullable=True),
    Column("detail", String(200), nullable=True),
)


@dataclass(frozen=True)
class AuditEntry:
    at: datetime
    user: str
    action: str
    row_id: int | None
    detail: str | None


def record(engine: Engine, user: str, action: str, row_id: int | None = None,
           detail: str | None = None) -> None:
    with engine.begin() as conn:
        conn.execute(insert(web_audit).values(at=datetime.now(UTC), user=user[:64],
                                              action=action[:32], row_id=row_id,
                                              detail=None if detail is None else detail[:200]))


def recent(engine: Engine, limit: int = 50) -> list[AuditEntry]:
    with engine.connect() as conn:
        rows = conn.execute(select(web_audit).order_by(web_audit.c.id.desc()).limit(limit))
        return [AuditEntry(r.at, r.user, r.action, r.row_id, r.detail) for r in rows]
