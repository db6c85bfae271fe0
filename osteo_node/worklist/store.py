"""FLS worklist table (SQLAlchemy Core on the shared METADATA; PostgreSQL-compatible).

One row per analysed SERIES with a positive (or review) finding, keyed by (study UID, series
UID): :func:`add_from_result` is idempotent (a re-analysis updates the findings and keeps the
FLS's status). Patient name / ID / birth date are stored here on purpose (the FLS has to call
the patient); they are never logged.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import structlog
from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Engine,
    Float,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    insert,
    select,
    update,
)

from osteo_node.clinical.assessment import build_assessment
from osteo_node.clinical.red_flags import action as red_flag_action
from osteo_node.exporters.common import safe_get, uncertain_levels
from osteo_node.pipeline.results import AnalysisOutput
from osteo_node.store.db import METADATA
from osteo_node.worklist.rules import FlsRules, classify, load_rules, max_grade, summary

log = structlog.get_logger(__name__)

fls_worklist = Table(
    "fls_worklist", METADATA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("study_instance_uid", String(64), nullable=False),
    Column("series_instance_uid", String(64), nullable=False),
    Column("patient_id", String(64), nullable=False, default=""),
    Column("patient_name", String(324), nullable=False, default=""),
    Column("patient_birth_date", String(8), nullable=False, default=""),
    Column("patient_sex", String(16), nullable=False, default=""),
    Column("study_date", String(8), nullable=False, default=""),
    Column("accession_number", String(16), nullable=False, default=""),
    Column("modality", String(16), nullable=False, default=""),
    Column("trigger", String(16), nullable=False),
    Column("osteoporosis_suspected", Boolean, nullable=True),
    Column("density_level", String(8), nullable=True),
    Column("density_hu", Float, nullable=True),
    # a level name in the findings is uncertain (shown "L1?"); None: not assessed
    Column("level_uncertain", Boolean, nullable=True),
    Column("max_genant_grade", Integer, nullable=True),
    Column("vcf_levels", String(200), nullable=False, default=""),
    Column("findings_summary", Text, nullable=False, default=""),
    Column("red_flags", Text, nullable=False, default=""),
    Column("vertebrae_json", Text, nullable=False, default="[]"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("status", String(20), nullable=False, default="new"),
    Column("status_changed_at", DateTime(timezone=True), nullable=True),
    Column("status_changed_by", String(64), nullable=True),
    Column("status_note", Text, nullable=True),
    UniqueConstraint("study_instance_uid", "series_instance_uid", name="uq_fls_study_series"),
)


class WorklistError(ValueError):
    """Bad worklist request (unknown row, unknown status...)."""


@dataclass(frozen=True)
class WorklistRow:
    id: int
    study_instance_uid: str
    series_instance_uid: str
    patient_id: str
    patient_name: str
    patient_birth_date: str
    patient_sex: str
    study_date: str
    accession_number: str
    modality: str
    trigger: str
    osteoporosis_suspected: bool | None
    density_level: str | None
    density_hu: float | None
    level_uncertain: bool | None
    max_genant_grade: int | None
    vcf_levels: str
    findings_summary: str
    red_flags: str  # imaging red flags for a pathological fracture ("; "-separated reasons)
    vertebrae_json: str
    created_at: datetime
    updated_at: datetime
    status: str
    status_changed_at: datetime | None
    status_changed_by: str | None
    status_note: str | None

    @property
    def vertebrae(self) -> list[dict[str, Any]]:
        data = json.loads(self.vertebrae_json or "[]")
        return data if isinstance(data, list) else []


FIELDS = tuple(WorklistRow.__dataclass_fields__)


def _utc(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:  # SQLite returns naive datetimes
        return value.replace(tzinfo=UTC)
    return value


def row_from_mapping(m: Any) -> WorklistRow:
    d = dict(m)
    for k in ("created_at", "updated_at", "status_changed_at"):
        d[k] = _utc(d[k])
    return WorklistRow(**{k: d[k] for k in FIELDS})


def _text(header: Any, keyword: str) -> str:
    if header is None:
        return ""
    value = safe_get(header, keyword)
    return "" if value is None else str(value)


def _finding_values(output: AnalysisOutput, rules: FlsRules) -> dict[str, Any]:
    r = output.result
    f = r.findings
    vertebrae = [{"level": v.level, "genant_grade": v.genant_grade, "morphology": v.morphology,
                  "height_loss": v.height_loss,
                  "hu_mean": v.trabecular_hu.mean if v.trabecular_hu else None,
                  "level_uncertain": v.level_uncertain}
                 for v in r.vertebrae]
    assessed = any(v.level_uncertain is not None for v in r.vertebrae) or (
        f is not None and f.density_level_uncertain is not None)
    # The patient-level assessment (issue 5) from the imaging alone: the node has no clinical
    # record; its red flags (fracture above T7, focal lytic/sclerotic areas...) route the patient
    # to an oncology work-up rather than (only) to osteoporosis care.
    flags = build_assessment(None, None, r.to_json()).red_flags
    text = summary(r, rules)
    if flags:
        text += f" Red flags: {'; '.join(fl.reason for fl in flags)} - {red_flag_action()}."
    return {
        "red_flags": "; ".join(fl.reason for fl in flags),
        "osteoporosis_suspected": f.osteoporosis_suspected if f else None,
        "density_level": f.density_level if f else None,
        "density_hu": f.l1_hu if f else None,
        "level_uncertain": bool(uncertain_levels(r)) if assessed else None,
        "max_genant_grade": max_grade(r),
        "vcf_levels": ",".join(f.vcf_levels) if f else "",
        "findings_summary": text,
        "vertebrae_json": json.dumps(vertebrae),
        "modality": r.modality,
    }


def add_from_result(engine: Engine, output: AnalysisOutput, *, rules: FlsRules | None = None,
                    now: datetime | None = None) -> int | None:
    """Add (or refresh) the worklist row of a positive result; returns its id, None if none."""
    rules = rules or load_rules()
    r = output.result
    trigger = classify(r, rules)
    if trigger is None:
        return None
    study = r.study_instance_uid or (output.volume.study_instance_uid if output.volume else None)
    series = r.series_instance_uid or (
        output.volume.series_instance_uid if output.volume else None)
    if not study or not series:
        raise WorklistError("result without Study/Series Instance UID cannot go on the worklist")
    now = now or datetime.now(UTC)
    header = output.volume.header if output.volume is not None else None
    values = _finding_values(output, rules) | {"trigger": trigger, "updated_at": now}
    with engine.begin() as conn:
        existing = conn.execute(select(fls_worklist.c.id).where(
            fls_worklist.c.study_instance_uid == study,
            fls_worklist.c.series_instance_uid == series)).scalar_one_or_none()
        if existing is not None:
            conn.execute(update(fls_worklist).where(fls_worklist.c.id == existing).values(values))
            row_id = int(existing)
        else:
            keywords = {"patient_id": "PatientID", "patient_name": "PatientName",
                        "patient_birth_date": "PatientBirthDate", "patient_sex": "PatientSex",
                        "study_date": "StudyDate", "accession_number": "AccessionNumber"}
            # cut to the column width (PostgreSQL refuses longer values; DICOM VRs bound most)
            patient = {col: _text(header, kw)[: getattr(fls_worklist.c[col].type, "length", None)]
                       for col, kw in keywords.items()}
            res = conn.execute(insert(fls_worklist).values(
                study_instance_uid=study, series_instance_uid=series, created_at=now,
                status=rules.statuses[0], **patient, **values))
            row_id = int(res.inserted_primary_key[0])  # type: ignore[index]
    log.info("worklist_row", row_id=row_id, study_uid=study, series_uid=series,
             trigger=trigger, updated=existing is not None)
    return row_id


WITHDRAWN_NOTE = "withdrawn: a later analysis of the complete series is not positive"


def withdraw(engine: Engine, output: AnalysisOutput, *, rules: FlsRules | None = None,
             now: datetime | None = None) -> int | None:
    """A later analysis of a series that is not positive: its row (made by an earlier, e.g.
    partial, generation) leaves the open list if nobody has worked on it yet (status
    ``new`` -> ``withdrawn_status``, ``not_indicated``, with a note); a row someone has
    already acted on keeps its status and gets the note. Returns the row id, None if none."""
    rules = rules or load_rules()
    r = output.result
    if not r.study_instance_uid or not r.series_instance_uid:
        return None
    now = now or datetime.now(UTC)
    with engine.begin() as conn:
        row = conn.execute(select(fls_worklist.c.id, fls_worklist.c.status).where(
            fls_worklist.c.study_instance_uid == r.study_instance_uid,
            fls_worklist.c.series_instance_uid == r.series_instance_uid)).first()
        if row is None:
            return None
        values: dict[str, Any] = {"status_note": WITHDRAWN_NOTE, "updated_at": now}
        if row.status == rules.statuses[0]:
            values |= {"status": rules.withdrawn_status, "status_changed_at": now,
                       "status_changed_by": "osteo-node"}
        conn.execute(update(fls_worklist).where(fls_worklist.c.id == row.id).values(values))
    log.info("worklist_row_withdrawn", row_id=row.id, study_uid=r.study_instance_uid,
             series_uid=r.series_instance_uid, previous_status=row.status)
    return int(row.id)


def set_status(engine: Engine, row_id: int, status: str, *, changed_by: str,
               note: str | None = None, rules: FlsRules | None = None,
               now: datetime | None = None) -> WorklistRow:
    """Change a row's status (new / contacted / referred / not_indicated), with who and when."""
    rules = rules or load_rules()
    if status not in rules.statuses:
        raise WorklistError(f"unknown status {status!r}; expected one of {rules.statuses}")
    if not changed_by.strip():
        raise WorklistError("changed_by is required")
    now = now or datetime.now(UTC)
    with engine.begin() as conn:
        res = conn.execute(update(fls_worklist).where(fls_worklist.c.id == row_id).values(
            status=status, status_changed_at=now, status_changed_by=changed_by[:64],
            status_note=note))
        if res.rowcount != 1:
            raise WorklistError(f"no worklist row {row_id}")
        row = conn.execute(select(fls_worklist).where(fls_worklist.c.id == row_id)).mappings()
        out = row_from_mapping(row.one())
    log.info("worklist_status", row_id=row_id, status=status)
    return out


def has_row_for_study(engine: Engine, study_instance_uid: str) -> bool:
    """Whether the worklist has a row for this study."""
    with engine.connect() as conn:
        return conn.execute(select(fls_worklist.c.id).where(
            fls_worklist.c.study_instance_uid == study_instance_uid).limit(1)).first() is not None


def list_rows(engine: Engine, *, since: date | datetime | None = None,
              statuses: Sequence[str] | None = None) -> list[WorklistRow]:
    """Rows created or updated at/after ``since``, oldest first. A date is that UTC day; a
    date-time with an offset is that instant, a naive one is UTC. The comparison is made in UTC
    (SQLite stores no offset, so an offset left in would be compared as local clock time)."""
    q = select(fls_worklist).order_by(fls_worklist.c.id)
    if since is not None:
        start = since if isinstance(since, datetime) else datetime(
            since.year, since.month, since.day, tzinfo=UTC)
        start = start.astimezone(UTC) if start.tzinfo is not None else start.replace(tzinfo=UTC)
        q = q.where(fls_worklist.c.updated_at >= start)
    if statuses:
        q = q.where(fls_worklist.c.status.in_(list(statuses)))
    with engine.connect() as conn:
        return [row_from_mapping(m) for m in conn.execute(q).mappings()]
