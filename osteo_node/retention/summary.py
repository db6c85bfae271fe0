"""What ``osteo-node status`` shows about retention: what is in the spool and the outbox, how
much of it is settled (may be deleted) and due (the next round deletes it), what was deleted in
the last 24 hours and the last round. Read only."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, func, inspect, select

from osteo_node.config.sections import RetentionSettings
from osteo_node.retention.facts import outbox_candidates, spool_candidates
from osteo_node.retention.policy import Plan, plan
from osteo_node.retention.run import limits_of
from osteo_node.retention.tables import OUTBOX, SPOOL, TABLES, retention_log, retention_runs

DAY = 86400.0


def _area(p: Plan[Any], unit: str) -> dict[str, Any]:
    return {unit: p.count, "bytes": p.total, f"settled_{unit}": p.settled_count,
            "settled_bytes": p.settled, f"due_{unit}": len(p.deletions),
            "due_bytes": p.deleted_bytes, "blocked": p.blocked,
            "over_limit_bytes": p.over_limit}


def _purged_since(conn: Connection, since: float) -> dict[str, int]:
    rows = conn.execute(
        select(retention_log.c.area, func.count(), func.coalesce(func.sum(retention_log.c.files),
                                                                 0),
               func.coalesce(func.sum(retention_log.c.bytes), 0))
        .where(retention_log.c.purged_at >= since).group_by(retention_log.c.area)).all()
    by_area = {r[0]: (int(r[1]), int(r[2]), int(r[3])) for r in rows}
    spool, outbox = by_area.get(SPOOL, (0, 0, 0)), by_area.get(OUTBOX, (0, 0, 0))
    return {"spool_series": spool[0], "spool_files": spool[1], "spool_bytes": spool[2],
            "outbox_objects": outbox[0], "outbox_bytes": outbox[2]}


def _last_run(conn: Connection) -> dict[str, Any] | None:
    row = conn.execute(select(retention_runs).order_by(retention_runs.c.id.desc()).limit(1)
                       ).first()
    return None if row is None else dict(row._mapping)


def summary(conn: Connection, settings: RetentionSettings, now: float) -> dict[str, Any]:
    """The retention part of ``status`` (``available`` False when the database predates it)."""
    present = set(inspect(conn).get_table_names())
    if not {t.name for t in TABLES} <= present:
        return {"available": False, "enabled": settings.enabled,
                "reason": "the database has no retention tables (osteo-node db upgrade)"}
    spool_limits, outbox_limits = limits_of(settings)
    return {
        "available": True,
        "enabled": settings.enabled,
        "spool": _area(plan(spool_candidates(conn), spool_limits, now), "series"),
        "outbox": _area(plan(outbox_candidates(conn), outbox_limits, now), "objects"),
        "purged_last_24h": _purged_since(conn, now - DAY),
        "last_run": _last_run(conn),
    }


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def text_lines(info: dict[str, Any], now: float) -> list[str]:
    """The human-readable status lines."""
    if not info.get("available"):
        return [f"retention: {info.get('reason', 'not available')}"]
    sp, ob, day = info["spool"], info["outbox"], info["purged_last_24h"]
    state = "on" if info["enabled"] else "off (retention.enabled: false)"
    lines = [
        f"retention: {state}",
        f"  spool: {sp['series']} series, {_size(sp['bytes'])}; settled (deletable) "
        f"{sp['settled_series']} series, {_size(sp['settled_bytes'])}; due now "
        f"{sp['due_series']} series, {_size(sp['due_bytes'])}"
        + (f"; kept: {_blocked(sp['blocked'])}" if sp["blocked"] else ""),
        f"  outbox: {ob['objects']} objects, {_size(ob['bytes'])}; settled "
        f"{ob['settled_objects']}, {_size(ob['settled_bytes'])}; due now {ob['due_objects']}, "
        f"{_size(ob['due_bytes'])}" + (f"; kept: {_blocked(ob['blocked'])}"
                                      if ob["blocked"] else ""),
        f"  purged in the last 24 h: {day['spool_series']} series ({day['spool_files']} files, "
        f"{_size(day['spool_bytes'])}) from the spool, {day['outbox_objects']} objects "
        f"({_size(day['outbox_bytes'])}) from the outbox",
    ]
    for area, a in (("spool", sp), ("outbox", ob)):
        if a["over_limit_bytes"]:
            lines.append(f"  WARNING: the {area} stays {_size(a['over_limit_bytes'])} above its "
                         "size limit: the rest is not settled yet")
    run = info["last_run"]
    if run is None:
        lines.append("  last run: never")
    else:
        ago = now - float(run["finished_at"] or run["started_at"])
        done = "finished" if run["finished_at"] is not None else "started, not finished"
        lines.append(
            f"  last run: {done} {ago / 60:.0f} min ago: {run['spool_series']} series "
            f"({_size(run['spool_bytes'])}), {run['outbox_objects']} objects "
            f"({_size(run['outbox_bytes'])}) deleted, {run['errors']} errors"
            + (f"; {run['note']}" if run["note"] else ""))
    return lines


def _blocked(blocked: dict[str, int]) -> str:
    return ", ".join(f"{n} {why.replace('_', ' ')}" for why, n in blocked.items())
