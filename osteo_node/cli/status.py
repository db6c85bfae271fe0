"""``osteo-node status --config FILE [--json]``: counts, queue depth, recent jobs, failures."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("status", help="show queue depth, recent jobs and failures")
    p.add_argument("--config", required=True, help="YAML configuration file")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--limit", type=int, default=10, help="recent jobs to list")
    p.set_defaults(func=run)


def collect(database_url: str, limit: int) -> dict[str, Any]:
    """Read the node's state; creates nothing. Raises
    :class:`osteo_node.store.db.DatabaseUnavailableError` when the database or its tables are
    missing."""
    from sqlalchemy import func, select

    from osteo_node.outbox.tables import outbox_items
    from osteo_node.queue import jobs as job_queue
    from osteo_node.queue.jobs import FAILED, NOT_ANALYSABLE, recent_jobs, state_counts
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
                "recent_jobs": recent_jobs(conn, limit),
                "recent_failures": recent_jobs(conn, limit, (FAILED,)),
                "recent_not_analysable": recent_jobs(conn, limit, (NOT_ANALYSABLE,)),
            }
    finally:
        engine.dispose()


def run(args: argparse.Namespace) -> int:
    from osteo_node.cli.common import settings_or_report
    from osteo_node.store.db import DatabaseUnavailableError

    settings = settings_or_report(args.config)
    if settings is None:
        return 1
    try:
        info = collect(settings.storage.database_url, args.limit)
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
