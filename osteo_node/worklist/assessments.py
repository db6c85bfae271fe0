"""Patient-level assessments (``osteo-node assess``: DXA, clinical fracture risk, red flags)
stored against the study they belong to, for the FLS worklist and the study page.

Append-only: every stored assessment is kept with who stored it and when (the audit of what
the FLS was shown); the pages show the newest one of a study. The document is the ``assess``
JSON as written (``PatientAssessment.to_json``: age and sex, no name or ID). A study with no
stored assessment is *not assessed*: never a low risk.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    Integer,
    Select,
    String,
    Table,
    Text,
    func,
    insert,
    select,
)

from osteo_node.store.db import METADATA

log = structlog.get_logger(__name__)

#: the keys every ``osteo-node assess`` document has (issue 5 schema)
REQUIRED_KEYS = ("patient", "dxa", "risk", "red_flags", "summary")

fls_assessments = Table(
    "fls_assessments", METADATA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("study_instance_uid", String(64), nullable=False, index=True),
    Column("risk_category", String(16), nullable=True),  # None: the risk was not computed
    Column("dxa_category", String(32), nullable=True),  # None: no DXA results
    Column("document", Text, nullable=False),
    Column("stored_at", DateTime(timezone=True), nullable=False),
    Column("stored_by", String(64), nullable=False),
)


class AssessmentError(ValueError):
    """Not an assessment document, or no study to store it against."""


@dataclass(frozen=True)
class StoredAssessment:
    id: int
    study_instance_uid: str
    risk_category: str | None
    document: dict[str, Any]
    stored_at: datetime
    stored_by: str


def is_assessment(doc: Any) -> bool:
    return isinstance(doc, Mapping) and all(k in doc for k in REQUIRED_KEYS)


def study_uid_of(doc: Mapping[str, Any], given: str | None = None) -> str:
    """The study the assessment belongs to: ``given`` (e.g. ``--study-uid``) or the imaging
    analysis it was made with; both present must agree."""
    imaging = doc.get("imaging")
    from_doc = imaging.get("study_instance_uid") if isinstance(imaging, Mapping) else None
    if given and from_doc and given != from_doc:
        raise AssessmentError(f"the assessment's imaging is study {from_doc}, not {given}")
    uid = given or from_doc
    if not uid or not isinstance(uid, str) or len(uid) > 64:
        raise AssessmentError("no Study Instance UID to store the assessment against (give the "
                              "imaging analysis of the study, or the UID)")
    return uid


def store(engine: Engine, doc: Mapping[str, Any], *, stored_by: str,
          study_uid: str | None = None, now: datetime | None = None) -> StoredAssessment:
    """Store ``doc`` against its study (see :func:`study_uid_of`); returns what was stored."""
    if not is_assessment(doc):
        raise AssessmentError(f"not an osteo-node assessment (keys {', '.join(REQUIRED_KEYS)})")
    if not stored_by.strip():
        raise AssessmentError("who stores the assessment is required")
    uid = study_uid_of(doc, study_uid)
    risk, dxa = doc.get("risk"), doc.get("dxa")
    category = _short(risk.get("category") if isinstance(risk, Mapping) else None, 16)
    at, by = now or datetime.now(UTC), stored_by.strip()[:64]
    with engine.begin() as conn:
        res = conn.execute(insert(fls_assessments).values(
            study_instance_uid=uid, risk_category=category,
            dxa_category=_short(dxa.get("category") if isinstance(dxa, Mapping) else None, 32),
            document=json.dumps(doc), stored_at=at, stored_by=by))
        new_id = int(res.inserted_primary_key[0])  # type: ignore[index]
    log.info("assessment_stored", assessment_id=new_id, study_uid=uid, stored_by=by,
             risk_category=category)
    return StoredAssessment(new_id, uid, category, dict(doc), at, by)


def _newest_ids(study_uids: Iterable[str]) -> Select[Any] | None:
    """The id of each study's newest stored assessment (a subquery; None for no study)."""
    uids = sorted(set(study_uids))
    if not uids:
        return None
    a = fls_assessments.c
    return (select(func.max(a.id)).where(a.study_instance_uid.in_(uids))
            .group_by(a.study_instance_uid))


def _short(value: Any, length: int) -> str | None:
    return None if value is None else str(value)[:length]


def latest(engine: Engine, study_uids: Iterable[str]) -> dict[str, StoredAssessment]:
    """The newest stored assessment of each of these studies (absent: not assessed)."""
    newest = _newest_ids(study_uids)
    if newest is None:
        return {}
    with engine.connect() as conn:
        rows = conn.execute(select(fls_assessments).where(
            fls_assessments.c.id.in_(newest))).mappings().all()
    out = {}
    for m in rows:
        at = m["stored_at"]
        out[m["study_instance_uid"]] = StoredAssessment(
            int(m["id"]), m["study_instance_uid"], m["risk_category"], json.loads(m["document"]),
            at.replace(tzinfo=UTC) if at.tzinfo is None else at, m["stored_by"])
    return out


def risk_categories(engine: Engine, study_uids: Iterable[str]) -> dict[str, str | None]:
    """The risk category of each study's newest assessment (None: assessed, risk not computed;
    a study absent from the result is not assessed). For the worklist page: one query."""
    newest = _newest_ids(study_uids)
    if newest is None:
        return {}
    a = fls_assessments.c
    with engine.connect() as conn:
        rows = conn.execute(select(a.study_instance_uid, a.risk_category)
                            .where(a.id.in_(newest))).all()
    return {r.study_instance_uid: r.risk_category for r in rows}
