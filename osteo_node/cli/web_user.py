"""``osteo-node web-user``: the local users of the FLS web application.

- ``web-user add NAME --role viewer|editor|admin`` (password read from stdin, or asked for)
- ``web-user passwd NAME`` / ``web-user remove NAME`` / ``web-user list``

The database comes from ``--config FILE`` (storage.database_url) or ``--db URL``; the table is
tables created when missing. Passwords are never echoed or logged.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from osteo_node.cli.database_args import add_database_arguments, database_url


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("web-user", help="users of the FLS web application")
    sub = p.add_subparsers(dest="web_user_command", metavar="ACTION", required=True)
    for name, help_text in (("add", "add a user"), ("passwd", "set a user's password"),
                            ("remove", "remove a user"), ("list", "list the users")):
        a = sub.add_parser(name, help=help_text)
        if name != "list":
            a.add_argument("name")
        if name == "add":
            a.add_argument("--role", required=True, choices=("viewer", "editor", "admin"))
        if name in ("add", "passwd"):
            a.add_argument("--password-stdin", action="store_true",
                           help="read the password from stdin (one line) instead of asking")
        add_database_arguments(a)
    p.set_defaults(func=run)


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise ValueError("the passwords differ")
    return first


def run(args: argparse.Namespace) -> int:
    from osteo_node.config import ConfigError
    from osteo_node.store.db import make_engine
    from osteo_node.store.schema import SchemaError, ensure_schema
    from osteo_node.web import users

    try:
        url = database_url(args)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    engine = make_engine(url)
    try:
        ensure_schema(engine)
        cmd = args.web_user_command
        if cmd == "list":
            for u in users.list_users(engine):
                print(f"{u.name}\t{u.role}")
        elif cmd == "add":
            users.add_user(engine, args.name, args.role, _password(args))
            print(f"user {args.name} ({args.role}) added")
        elif cmd == "passwd":
            users.set_password(engine, args.name, _password(args))
            print(f"password of {args.name} set")
        else:
            users.remove_user(engine, args.name)
            print(f"user {args.name} removed")
    except (ValueError, SchemaError) as exc:  # UserError, differing passwords, not migrated
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    return 0
