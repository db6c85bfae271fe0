"""One retention round: read the state, plan (:mod:`.policy`), delete (:mod:`.purge`), record.

Used by the ``retention`` process of ``serve`` (:mod:`.process`) and by ``osteo-node retention
run`` (``--dry-run``: plan and report only, nothing deleted or recorded). A deletion that fails
is logged and counted; the round goes on with the next one, and the next round tries again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import structlog
from sqlalchemy import Engine, insert, update

from osteo_node.config.sections import RetentionSettings
from osteo_node.retention.facts import (
    ObjectKey,
    SeriesKey,
    outbox_candidates,
    spool_candidates,
)
from osteo_node.retention.policy import Deletion, Limits, Plan, plan
from osteo_node.retention.purge import Purged, Stamp, purge_object, purge_series
from osteo_node.retention.tables import OUTBOX, SPOOL, retention_runs
from osteo_node.safe_errors import describe

log = structlog.get_logger(__name__)

K = TypeVar("K")
GB = 1_000_000_000
HOUR = 3600.0


def limits_of(settings: RetentionSettings) -> tuple[Limits, Limits]:
    """(spool, outbox) limits of the configuration."""

    def make(hours: float | None, gb: float | None) -> Limits:
        return Limits(None if hours is None else hours * HOUR,
                      None if gb is None else int(gb * GB))

    return (make(settings.spool_max_age_hours, settings.spool_max_total_gb),
            make(settings.outbox_max_age_hours, settings.outbox_max_total_gb))


@dataclass
class Outcome(Generic[K]):
    """A planned deletion and what came of it (None: not run, dry run or no longer settled)."""

    deletion: Deletion[K]
    purged: Purged | None = None
    error: str | None = None


@dataclass
class RunReport:
    now: float
    dry_run: bool
    spool: Plan[SeriesKey]
    outbox: Plan[ObjectKey]
    spool_outcomes: list[Outcome[SeriesKey]] = field(default_factory=list)
    outbox_outcomes: list[Outcome[ObjectKey]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    run_id: int | None = None

    @property
    def errors(self) -> int:
        outcomes: list[Outcome[Any]] = [*self.spool_outcomes, *self.outbox_outcomes]
        return sum((o.purged.errors if o.purged else 0) + int(o.error is not None)
                   for o in outcomes)

    def totals(self) -> dict[str, int]:
        def done(outcomes: list[Any]) -> list[Purged]:
            return [o.purged for o in outcomes if o.purged is not None]

        spool, outbox = done(self.spool_outcomes), done(self.outbox_outcomes)
        return {"spool_series": len(spool), "spool_files": sum(p.files for p in spool),
                "spool_bytes": sum(p.bytes for p in spool), "outbox_objects": len(outbox),
                "outbox_bytes": sum(p.bytes for p in outbox), "errors": self.errors}

    def as_dict(self) -> dict[str, Any]:
        """For ``retention run --json`` (UIDs, sizes and reasons only)."""

        def plan_dict(p: Plan[Any]) -> dict[str, Any]:
            return {"candidates": p.count, "bytes": p.total, "settled": p.settled_count,
                    "settled_bytes": p.settled, "blocked": p.blocked,
                    "over_limit_bytes": p.over_limit}

        def series_row(o: Outcome[SeriesKey]) -> dict[str, Any]:
            k = o.deletion.candidate.key
            return {"series_instance_uid": k.series_uid, "study_instance_uid": k.study_uid,
                    "reason": o.deletion.reason, "bytes": o.deletion.candidate.size,
                    **_result(o)}

        def object_row(o: Outcome[ObjectKey]) -> dict[str, Any]:
            k = o.deletion.candidate.key
            return {"sop_instance_uid": k.sop_uid, "study_instance_uid": k.study_uid,
                    "reason": o.deletion.reason, "bytes": o.deletion.candidate.size,
                    **_result(o)}

        return {"dry_run": self.dry_run, "run_id": self.run_id,
                "spool": {**plan_dict(self.spool),
                          "deletions": [series_row(o) for o in self.spool_outcomes]},
                "outbox": {**plan_dict(self.outbox),
                           "deletions": [object_row(o) for o in self.outbox_outcomes]},
                "totals": self.totals(), "notes": self.notes}


def _result(o: Outcome[Any]) -> dict[str, Any]:
    if o.error is not None:
        return {"done": False, "error": o.error}
    if o.purged is None:
        return {"done": False}
    return {"done": True, "files": o.purged.files, "already_missing": o.purged.missing,
            "errors": o.purged.errors, "complete": o.purged.complete}


def run_once(engine: Engine, settings: RetentionSettings, spool_dir: Path, outbox_dir: Path,
             clock: Callable[[], float], *, dry_run: bool = False,
             stopping: Callable[[], bool] = lambda: False) -> RunReport:
    """Plan and (unless ``dry_run``) carry out one round; ``clock``: epoch seconds now (ages
    and the recorded times are measured with it). ``stopping``: checked between deletions (a
    long first round must not hold up the node's stop); what is left waits for the next."""
    now = clock()
    spool_limits, outbox_limits = limits_of(settings)
    with engine.connect() as conn:
        spool_plan = plan(spool_candidates(conn), spool_limits, now)
        outbox_plan = plan(outbox_candidates(conn), outbox_limits, now)
    report = RunReport(now, dry_run, spool_plan, outbox_plan)
    for area, p in ((SPOOL, spool_plan), (OUTBOX, outbox_plan)):
        if p.over_limit:
            report.notes.append(f"{area} stays {p.over_limit} bytes above its size limit: the "
                                f"rest is not settled yet ({p.blocked})")
            log.warning("retention_size_limit_unreachable", area=area,
                        over_limit_bytes=p.over_limit, blocked=p.blocked, dry_run=dry_run)
    if dry_run:
        report.spool_outcomes = [Outcome(d) for d in spool_plan.deletions]
        report.outbox_outcomes = [Outcome(d) for d in outbox_plan.deletions]
        return report
    with engine.begin() as conn:
        report.run_id = int(conn.execute(
            insert(retention_runs).values(started_at=now).returning(retention_runs.c.id)
        ).scalar_one())
    for ds in spool_plan.deletions:
        if stopping():
            break
        report.spool_outcomes.append(_attempt(
            ds, {"series_instance_uid": ds.candidate.key.series_uid},
            lambda d: purge_series(engine, spool_dir, d.candidate.key,
                                   Stamp(now, d.reason, report.run_id))))
    for do in outbox_plan.deletions:
        if stopping():
            break
        report.outbox_outcomes.append(_attempt(
            do, {"sop_instance_uid": do.candidate.key.sop_uid},
            lambda d: purge_object(engine, outbox_dir, d.candidate.key,
                                   Stamp(now, d.reason, report.run_id))))
    totals = report.totals()
    with engine.begin() as conn:
        conn.execute(update(retention_runs).where(retention_runs.c.id == report.run_id).values(
            finished_at=clock(), note="; ".join(report.notes) or None, **totals))
    log.info("retention_run_finished", run_id=report.run_id, **totals,
             spool_bytes_left=spool_plan.total - totals["spool_bytes"],
             outbox_bytes_left=outbox_plan.total - totals["outbox_bytes"])
    return report


def _attempt(deletion: Deletion[K], uids: dict[str, str],
             purge: Callable[[Deletion[K]], Purged | None]) -> Outcome[K]:
    try:
        return Outcome(deletion, purge(deletion))
    except Exception as exc:  # noqa: BLE001 - one failed deletion must not end the round
        log.error("retention_purge_failed", error=describe(exc), **uids)
        return Outcome(deletion, error=describe(exc))
