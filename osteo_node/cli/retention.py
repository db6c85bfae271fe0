"""``osteo-node retention run --config FILE [--dry-run] [--json]``: one retention round now.

Deletes (``--dry-run``: only lists) the spool files of settled series and the outbox files of
settled result objects that the configured ``retention`` limits say should go, exactly as the
``retention`` process of ``serve`` does every ``interval_seconds`` (also when
``retention.enabled`` is false: this is the on-demand way). Prints UIDs, sizes and reasons.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("retention", help="delete settled spool and outbox files now")
    sub = p.add_subparsers(dest="retention_action", metavar="ACTION", required=True)
    run_p = sub.add_parser("run", help="one retention round with the configured limits")
    run_p.add_argument("--config", required=True, help="YAML configuration file")
    run_p.add_argument("--dry-run", action="store_true",
                       help="only list what would be deleted (nothing deleted or recorded)")
    run_p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import time

    from osteo_node.cli.common import settings_or_report
    from osteo_node.outbox.tables import TABLES as OUTBOX_TABLES
    from osteo_node.queue.jobs import jobs
    from osteo_node.retention.run import run_once
    from osteo_node.retention.tables import TABLES as RETENTION_TABLES
    from osteo_node.store.db import DatabaseUnavailableError, open_existing
    from osteo_node.store.index import instances, series, studies

    settings = settings_or_report(args.config)
    if settings is None:
        return 1
    tables = [t.name for t in (studies, series, instances, jobs, *OUTBOX_TABLES,
                               *RETENTION_TABLES)]
    try:  # never creates a database or tables
        engine = open_existing(settings.storage.database_url, tables, read_only=args.dry_run)
    except DatabaseUnavailableError as exc:
        print(f"osteo-node retention: {exc}", file=sys.stderr)
        return 1
    try:
        report = run_once(engine, settings.retention, settings.storage.spool_dir,
                          settings.storage.outbox_dir, time.time, dry_run=args.dry_run)
    finally:
        engine.dispose()
    out = report.as_dict()
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        if not settings.retention.enabled:
            print("note: retention.enabled is false: the node deletes nothing on its own")
        for line in _text(out):
            print(line)
    return 1 if report.errors else 0


def _text(out: dict[str, Any]) -> list[str]:
    verb = "would delete" if out["dry_run"] else "deleted"
    lines = ["dry run: nothing is deleted"] if out["dry_run"] else []
    for area, unit, key in (("spool", "series", "series_instance_uid"),
                            ("outbox", "objects", "sop_instance_uid")):
        a = out[area]
        lines.append(f"{area}: {a['candidates']} {unit}, {a['bytes']} bytes; settled "
                     f"{a['settled']} ({a['settled_bytes']} bytes); kept (not settled): "
                     + (", ".join(f"{n} {why}" for why, n in a["blocked"].items()) or "none"))
        for d in a["deletions"]:
            what = "series" if area == "spool" else "object"
            if out["dry_run"] or d["done"]:
                state = verb
            else:
                state = "kept (changed meanwhile)" if "error" not in d else "FAILED"
            extra = f", {d['files']} files" if d.get("files") is not None else ""
            lines.append(f"  {state} {area} {what} {d[key]} (study {d['study_instance_uid']})"
                         f": {d['bytes']} bytes{extra}, reason {d['reason']}")
    lines.extend(f"warning: {n}" for n in out["notes"])
    t = out["totals"]
    if not out["dry_run"]:
        lines.append(f"deleted: {t['spool_series']} series ({t['spool_files']} files, "
                     f"{t['spool_bytes']} bytes) from the spool, {t['outbox_objects']} objects "
                     f"({t['outbox_bytes']} bytes) from the outbox, {t['errors']} errors")
    return lines
