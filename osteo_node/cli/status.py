"""``osteo-node status --config FILE [--json]``: counts, queue depth, recent jobs, failures,
retention (spool and outbox sizes, what is deletable, deleted in the last 24 h, the last
round), every host's processes (alive or stale by their heart-beats)."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC
from typing import TYPE_CHECKING, Any

from sqlalchemy import Integer

if TYPE_CHECKING:
    from osteo_node.config.sections import RetentionSettings


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("status", help="show queue depth, recent jobs and failures")
    p.add_argument("--config", required=True, help="YAML configuration file")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--limit", type=int, default=10, help="recent jobs to list")
    p.set_defaults(func=run)


def _outbox_waiting(conn: Any, max_attempts: int) -> dict[str, dict[str, Any]]:
    """Per destination: the oldest undelivered item's age (s) and how many are overdue (beyond
    the retry window, still retried)."""
    from datetime import datetime

    from sqlalchemy import func, select

    from osteo_node.outbox.tables import PENDING, SENDING, outbox_items

    waiting = outbox_items.c.state.in_((PENDING, SENDING))
    rows = conn.execute(
        select(outbox_items.c.destination, func.min(outbox_items.c.created_at),
               func.sum((outbox_items.c.attempts >= max_attempts).cast(Integer)))
        .where(waiting).group_by(outbox_items.c.destination)).all()
    now = datetime.now(UTC).replace(tzinfo=None)
    return {str(r[0]): {"oldest_pending_age_s": round((now - r[1]).total_seconds(), 1),
                        "overdue": int(r[2] or 0)} for r in rows}


def _outbox_failures(conn: Any, limit: int) -> list[dict[str, Any]]:
    """Result objects that ended failed (permanent: the object cannot be read from the outbox
    folder), newest first."""
    from sqlalchemy import select

    from osteo_node.outbox.tables import FAILED, outbox_items

    rows = conn.execute(
        select(outbox_items.c.sop_instance_uid, outbox_items.c.destination,
               outbox_items.c.last_error, outbox_items.c.updated_at)
        .where(outbox_items.c.state == FAILED).order_by(outbox_items.c.updated_at.desc())
        .limit(limit)).all()
    return [dict(r._mapping) for r in rows]


def collect(database_url: str, limit: int, retry_max_attempts: int = 10,
            retention: RetentionSettings | None = None, now: float | None = None,
            heartbeat_seconds: float = 10.0) -> dict[str, Any]:
    """Read the node's state; creates nothing. Raises
    :class:`osteo_node.store.db.DatabaseUnavailableError` when the database or its tables are
    missing. ``retention``: the policy whose due deletions are shown (default: the defaults);
    ``now``: epoch seconds (default: the clock)."""
    import time

    from sqlalchemy import func, select

    from osteo_node.cli.status_hosts import hosts_section
    from osteo_node.config.sections import RetentionSettings
    from osteo_node.outbox.tables import outbox_items
    from osteo_node.queue import jobs as job_queue
    from osteo_node.queue.jobs import FAILED, NOT_ANALYSABLE, recent_jobs, state_counts
    from osteo_node.retention.summary import summary
    from osteo_node.store import index
    from osteo_node.store.db import open_existing

    needed = [t.name for t in (index.studies, index.series, index.instances, job_queue.jobs,
                               outbox_items)]
    engine = open_existing(database_url, needed)
    try:
        with engine.connect() as conn:
            jobs = state_counts(conn)
            outbox = {r[0]: int(r[1]) for r in conn.execute(
                select(outbox_items.c.state, func.count()).group_by(outbox_items.c.state))}
            return {
                "index": index.counts(conn),
                "jobs": jobs,
                "queue_depth": jobs["queued"] + jobs["running"],
                "outbox": outbox,
                "outbox_waiting": _outbox_waiting(conn, retry_max_attempts),
                "outbox_failures": _outbox_failures(conn, limit),
                "recent_jobs": recent_jobs(conn, limit),
                "recent_failures": recent_jobs(conn, limit, (FAILED,)),
                "recent_not_analysable": recent_jobs(conn, limit, (NOT_ANALYSABLE,)),
                "retention": summary(conn, retention or RetentionSettings(),
                                     time.time() if now is None else now),
                "hosts": hosts_section(conn, time.time() if now is None else now,
                                       heartbeat_seconds),
            }
    finally:
        engine.dispose()


def run(args: argparse.Namespace) -> int:
    import time

    from osteo_node.cli.common import settings_or_report
    from osteo_node.cli.status_hosts import text_lines as hosts_lines
    from osteo_node.retention.summary import text_lines as retention_lines
    from osteo_node.store.db import DatabaseUnavailableError

    settings = settings_or_report(args.config)
    if settings is None:
        return 1
    try:
        info = collect(settings.storage.database_url, args.limit,
                       settings.retry.max_attempts, settings.retention,
                       heartbeat_seconds=settings.node.heartbeat_seconds)
    except DatabaseUnavailableError as exc:
        print(f"osteo-node status: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    idx = info["index"]
    print(f"index: {idx['studies']} studies, {idx['series']} series, {idx['instances']} instances")
    print(f"queue depth: {info['queue_depth']}  jobs: "
          + ", ".join(f"{k} {v}" for k, v in info["jobs"].items()))
    print("outbox: " + (", ".join(f"{k} {v}" for k, v in info["outbox"].items()) or "empty"))
    for dest, w in info["outbox_waiting"].items():
        print(f"  {dest}: oldest undelivered {w['oldest_pending_age_s']:.0f} s ago, "
              f"{w['overdue']} overdue (beyond the retry window, still retried)")
    if info["outbox_failures"]:
        print("outbox failures (cannot be sent; `outbox retry` re-arms them):")
        for f in info["outbox_failures"]:
            print(f"  {f['destination']} {f['sop_instance_uid']}  {f['last_error']}")
    for line in retention_lines(info["retention"], time.time()):
        print(line)
    for line in hosts_lines(info["hosts"], settings.node.heartbeat_seconds):
        print(line)
    for title, rows in (("recent jobs", info["recent_jobs"]),
                        ("recent failures", info["recent_failures"]),
                        ("recent not analysable", info["recent_not_analysable"])):
        print(f"{title}:")
        for j in rows:
            shown = j["last_error"] and j["state"] in ("failed", "not_analysable")
            err = f"  {j['last_error']}" if shown else ""
            print(f"  #{j['id']} {j['state']:<14} {j['modality']:<3} series "
                  f"{j['series_instance_uid']} gen {j['generation']} attempts {j['attempts']}"
                  f"{err}")
    return 0
