"""The worklist as the web page asks for it: filtered, sorted and paged in the database.

:class:`WorklistQuery` is parsed from the page's query string and validated (a bad value is a
:class:`QueryError`, a 400 page); only whitelisted columns can be sorted on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, Select, String, cast, func, or_, select

from osteo_node.worklist.store import WorklistRow, fls_worklist, row_from_mapping

SORTABLE = {
    "created": fls_worklist.c.created_at, "study_date": fls_worklist.c.study_date,
    "name": fls_worklist.c.patient_name, "grade": fls_worklist.c.max_genant_grade,
    "hu": fls_worklist.c.density_hu, "status": fls_worklist.c.status,
}
PAGE_SIZES = (25, 50, 100)
TRIGGERS = ("fracture", "low_density", "red_flag")


class QueryError(ValueError):
    """A filter, sort or page value the worklist page does not accept."""


@dataclass(frozen=True)
class WorklistQuery:
    status: str | None = None
    trigger: str | None = None
    text: str | None = None
    date_from: date | None = None
    date_to: date | None = None
    sort: str = "created"
    descending: bool = True
    page: int = 1
    per_page: int = 25

    @classmethod
    def parse(cls, params: Mapping[str, str], statuses: tuple[str, ...]) -> WorklistQuery:
        def get(key: str) -> str | None:
            v = (params.get(key) or "").strip()
            return v or None

        status, trigger = get("status"), get("trigger")
        if status is not None and status not in statuses:
            raise QueryError(f"unknown status {status!r}")
        if trigger is not None and trigger not in TRIGGERS:
            raise QueryError(f"unknown trigger {trigger!r}")
        text = get("q")
        if text is not None and len(text) > 100:
            raise QueryError("search text longer than 100 characters")
        try:
            d_from = date.fromisoformat(get("from")) if get("from") else None  # type: ignore[arg-type]
            d_to = date.fromisoformat(get("to")) if get("to") else None  # type: ignore[arg-type]
            page = int(get("page") or 1)
            per_page = int(get("per_page") or PAGE_SIZES[0])
        except ValueError as exc:
            raise QueryError(f"bad value: {exc}") from exc
        sort = get("sort") or "created"
        descending = sort.startswith("-") or sort == "created"
        sort = sort.lstrip("-")
        if sort not in SORTABLE:
            raise QueryError(f"cannot sort by {sort!r}")
        if page < 1 or per_page not in PAGE_SIZES:
            raise QueryError("page must be >= 1 and per_page one of 25, 50, 100")
        return cls(status, trigger, text, d_from, d_to, sort, descending, page, per_page)


@dataclass(frozen=True)
class WorklistPage:
    rows: list[WorklistRow]
    total: int
    query: WorklistQuery

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.query.per_page))


def _filtered(q: WorklistQuery) -> Select[Any]:
    s = select(fls_worklist)
    c = fls_worklist.c
    if q.status:
        s = s.where(c.status == q.status)
    if q.trigger == "fracture":
        s = s.where(c.max_genant_grade >= 2)
    elif q.trigger == "low_density":
        s = s.where(c.osteoporosis_suspected.is_(True))
    elif q.trigger == "red_flag":
        s = s.where(c.red_flags != "")
    if q.text:
        like = f"%{q.text.replace('%', '').replace('_', '')}%"
        s = s.where(or_(c.patient_name.ilike(like), c.patient_id.ilike(like),
                        c.accession_number.ilike(like)))
    if q.date_from:
        s = s.where(c.created_at >= datetime(q.date_from.year, q.date_from.month,
                                             q.date_from.day, tzinfo=UTC))
    if q.date_to:
        end = datetime(q.date_to.year, q.date_to.month, q.date_to.day, tzinfo=UTC)
        s = s.where(c.created_at < end + timedelta(days=1))
    return s


def worklist_page(engine: Engine, q: WorklistQuery) -> WorklistPage:
    base = _filtered(q)
    col = SORTABLE[q.sort]
    order = col.desc() if q.descending else col.asc()
    with engine.connect() as conn:
        total = int(conn.execute(select(func.count()).select_from(base.subquery())).scalar_one())
        rows = conn.execute(base.order_by(order, fls_worklist.c.id.desc())
                            .limit(q.per_page).offset((q.page - 1) * q.per_page)).mappings()
        return WorklistPage([row_from_mapping(m) for m in rows], total, q)


def all_rows(engine: Engine, q: WorklistQuery, limit: int = 100_000) -> list[WorklistRow]:
    """Every row the filters select (for exports), in the page's order."""
    col = SORTABLE[q.sort]
    order = col.desc() if q.descending else col.asc()
    with engine.connect() as conn:
        rows = conn.execute(_filtered(q).order_by(order, fls_worklist.c.id.desc())
                            .limit(limit)).mappings()
        return [row_from_mapping(m) for m in rows]


def get_row(engine: Engine, row_id: int) -> WorklistRow | None:
    with engine.connect() as conn:
        m = conn.execute(select(fls_worklist).where(fls_worklist.c.id == row_id)).mappings()
        one = m.first()
    return row_from_mapping(one) if one is not None else None


def sc_files(engine: Engine, outbox_dir: Path, row: WorklistRow) -> list[Path]:
    """The secondary-capture overlay(s) the node made for the row's series (newest first), as
    files in the outbox (objects are filed under the id of the job that made them)."""
    from osteo_node.outbox.tables import outbox_objects
    from osteo_node.queue.jobs import jobs
    from osteo_node.store.index import series

    o = outbox_objects.c
    job_ids = (select(cast(jobs.c.id, String)).join(series, series.c.id == jobs.c.series_id)
               .where(series.c.series_instance_uid == row.series_instance_uid))
    with engine.connect() as conn:
        found = conn.execute(select(o.rel_path).where(o.kind == "sc", o.job_id.in_(job_ids))
                             .order_by(o.created_at.desc())).all()
    paths = [outbox_dir / r.rel_path for r in found]
    return [p for p in paths if p.is_file()]
