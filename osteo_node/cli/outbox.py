"""``osteo-node outbox list|retry|purge --config FILE``: look at and manage the result outbox.

- ``list [--state S] [--limit N] [--json]``: per-destination counts (with each destination's
  protocol, ``dimse`` or ``dicomweb``, and where it is) and the latest items (SOP Instance UIDs,
  states, attempts, last error; no patient data).
- ``retry [--destination NAME]``: give items that ended ``failed`` a fresh set of attempts
  (same file, same SOP Instance UID); the running sender picks them up.
- ``purge --older-than-days N``: delete the files of objects delivered to every destination more
  than N days ago (the rows stay, so nothing is sent again).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from osteo_node.outbox.tables import STATES

if TYPE_CHECKING:
    from osteo_node.config import Settings


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("outbox", help="list, retry or purge result objects to be sent")
    p.add_argument("--config", required=True, help="YAML configuration file")
    sub = p.add_subparsers(dest="outbox_action", metavar="ACTION", required=True)
    ls = sub.add_parser("list", help="counts per destination and the latest items")
    ls.add_argument("--state", choices=STATES, help="only items in this state")
    ls.add_argument("--limit", type=int, default=20, help="items to list (default 20)")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    rt = sub.add_parser("retry", help="re-queue failed items (same SOP Instance UIDs)")
    rt.add_argument("--destination", help="only this destination (by name)")
    pg = sub.add_parser("purge", help="delete files of objects delivered everywhere")
    pg.add_argument(
        "--older-than-days", type=float, required=True, help="sent more than N days ago"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from osteo_node.cli.common import settings_or_report
    from osteo_node.outbox.tables import TABLES
    from osteo_node.store.db import DatabaseUnavailableError, open_existing

    settings = settings_or_report(args.config)
    if settings is None:
        return 1
    try:  # never creates a database or tables: a wrong database_url is an error, not "empty"
        engine = open_existing(settings.storage.database_url, [t.name for t in TABLES],
                               read_only=args.outbox_action == "list")
    except DatabaseUnavailableError as exc:
        print(f"osteo-node outbox: {exc}", file=sys.stderr)
        return 1
    actions = {"list": _list, "retry": _retry, "purge": _purge}
    try:
        return actions[args.outbox_action](engine, settings, args)
    finally:
        engine.dispose()


def _retry(engine: Any, settings: Settings, args: argparse.Namespace) -> int:
    from osteo_node.outbox import store

    names = {d.name for d in settings.destinations}
    if args.destination is not None and args.destination not in names:
        print(
            f"unknown destination {args.destination!r}; configured: {sorted(names)}",
            file=sys.stderr,
        )
        return 2
    n = store.retry_failed(engine, destination=args.destination)
    print(f"re-queued {n} failed item(s)")
    return 0


def _purge(engine: Any, settings: Settings, args: argparse.Namespace) -> int:
    from osteo_node.outbox import store

    if args.older_than_days < 0:
        print("--older-than-days must be >= 0", file=sys.stderr)
        return 2
    n = store.purge_sent(
        engine, settings.storage.outbox_dir, timedelta(days=args.older_than_days)
    )
    print(f"removed {n} file(s) of delivered objects")
    return 0


def _list(engine: Any, settings: Settings, args: argparse.Namespace) -> int:
    from osteo_node.outbox import store

    counts = store.counts(engine)
    items = store.list_items(engine, state=args.state, limit=args.limit)
    configured = {d.name: d for d in settings.destinations}

    def protocol(name: str) -> str:
        d = configured.get(name)
        return d.protocol if d is not None else "not configured"

    if args.json:
        print(json.dumps({
            "counts": counts,
            "destinations": {d.name: {"protocol": d.protocol, "endpoint": d.endpoint}
                             for d in settings.destinations},
            "items": [{**vars(i), "protocol": protocol(i.destination)} for i in items],
        }, indent=2, default=str))
        return 0
    if not counts:
        print("outbox: empty")
    for dest, by_state in sorted(counts.items()):
        d = configured.get(dest)
        where = f"{d.protocol} {d.endpoint}" if d is not None else "not configured"
        print(f"{dest}: " + ", ".join(f"{k} {v}" for k, v in sorted(by_state.items()))
              + f"  [{where}]")
    for i in items:
        err = f"  {i.last_error}" if i.last_error and i.state != "sent" else ""
        print(
            f"  #{i.id} {i.state:<7} {i.kind:<3} -> {i.destination} ({protocol(i.destination)}) "
            f"{i.sop_instance_uid} attempts {i.attempts} "
            f"next {i.next_attempt_at:%Y-%m-%d %H:%M:%S}{err}"
        )
    return 0
