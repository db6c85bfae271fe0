"""``osteo-node db upgrade|current (--config FILE | --db URL)``: the database's schema.

``upgrade`` brings the database to the newest revision (creates the tables of a new database,
adopts one made before migrations existed); run it once per release before starting the node's
processes on PostgreSQL (``systemd/osteo-node-migrate.service``). The embedded SQLite database
is upgraded by ``serve`` itself. ``current`` prints the database's revision and whether it is
the newest (exit 1 when it is not, so scripts can check).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from osteo_node.cli.database_args import add_database_arguments


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("db", help="database schema: upgrade, current revision")
    sub = p.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    up = sub.add_parser("upgrade", help="migrate the database to the newest schema revision")
    add_database_arguments(up)
    cur = sub.add_parser("current", help="show the database's schema revision")
    add_database_arguments(cur)
    p.set_defaults(func=run)


def _upgrade(url: str) -> int:
    from osteo_node.store.db import make_engine
    from osteo_node.store.schema import BASELINE, upgrade

    engine = make_engine(url)
    try:
        result = upgrade(engine)
    finally:
        engine.dispose()
    if result.adopted:
        print(f"adopted a database made before migrations existed (stamped {BASELINE})")
    if result.before == result.after:
        print(f"database already at revision {result.after} (newest)")
    else:
        print(f"database upgraded from {result.before or 'nothing'} to {result.after} (newest)")
    return 0


def _current(url: str) -> int:
    from osteo_node.store.db import open_existing
    from osteo_node.store.schema import head_revision, revision_of

    engine = open_existing(url, [])
    try:
        with engine.connect() as conn:
            current = revision_of(conn)
    finally:
        engine.dispose()
    head = head_revision()
    if current == head:
        print(f"{current} (newest)")
        return 0
    print(f"{current or 'none'} (newest is {head}: run `osteo-node db upgrade`)")
    return 1


def run(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from osteo_node.cli.database_args import database_url
    from osteo_node.config import ConfigError
    from osteo_node.store.db import DatabaseUnavailableError
    from osteo_node.store.schema import SchemaError

    try:
        url = database_url(args)
        if args.db_command == "upgrade":
            return _upgrade(url)
        return _current(url)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
    except (DatabaseUnavailableError, SchemaError) as exc:
        print(f"osteo-node db {args.db_command}: {exc}", file=sys.stderr)
    except SQLAlchemyError as exc:
        reason = getattr(exc, "orig", None) or exc  # the driver's message, without the SQL
        print(f"osteo-node db {args.db_command}: {reason}", file=sys.stderr)
    return 1
