"""``osteo-node serve --config FILE [--roles ROLE,...] [--allow-root]``: run the DICOM node
(listener, assembler, workers, outbox, web: all of them, or the roles chosen by ``--roles`` /
``node.roles`` when several hosts share the work, see docs/deployment.md).

The database schema: ``serve`` upgrades the embedded SQLite database itself; a PostgreSQL
database must have been migrated with ``osteo-node db upgrade`` (``serve`` refuses to start
otherwise, saying so).

Start-up checks (issue 16): the node refuses to run as root unless ``--allow-root`` is given (a
DICOM listener facing the hospital network should run as its own unprivileged user, see
``systemd/osteo-node.service``); it creates its files without access for others (umask 027: the
spool and the database hold patient data); it warns when the spool or outbox folder is
writable by anyone.
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

UMASK = 0o027


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("serve", help="run the DICOM node")
    p.add_argument("--config", required=True, help="YAML configuration file")
    p.add_argument("--allow-root", action="store_true",
                   help="run even as root (not recommended: use a dedicated user)")
    from osteo_node.config.sections import ALL_ROLES

    p.add_argument("--roles", metavar="ROLE,...",
                   help="run only these roles (overrides node.roles; default: all): "
                   + ", ".join(ALL_ROLES))
    p.set_defaults(func=run)


def world_writable(path: Path) -> bool:
    try:
        return bool(path.stat().st_mode & stat.S_IWOTH)
    except OSError:
        return False


def run(args: argparse.Namespace) -> int:
    from osteo_node import logging_setup
    from osteo_node.cli.common import settings_or_report

    if hasattr(os, "geteuid") and os.geteuid() == 0 and not args.allow_root:
        print("osteo-node serve: refusing to run as root; run it as a dedicated user (see "
              "systemd/osteo-node.service) or pass --allow-root", file=sys.stderr)
        return 2
    settings = settings_or_report(args.config)
    if settings is None:
        return 1
    if args.roles is not None:
        chosen = _roles_from_argument(args.roles)
        if chosen is None:
            return 2
        settings = replace(settings, node=replace(settings.node, roles=chosen))
    from osteo_node.node.supervisor import plan_children

    if not plan_children(settings):
        print(f"osteo-node serve: the roles {', '.join(settings.node.roles)} start no process "
              "here (outbox needs destinations, web web.enabled, retention retention.enabled)",
              file=sys.stderr)
        return 2
    json = logging_setup.json_flag(settings.logging.format)
    logging_setup.configure(settings.logging.level, json=json)
    os.umask(UMASK)  # files 0640, folders 0750: patient data is not for other users
    import structlog

    log = structlog.get_logger("osteo_node.serve")
    if os.geteuid() == 0:
        log.warning("running as root (--allow-root)")
    for path in (settings.storage.spool_dir, settings.storage.outbox_dir):
        if world_writable(path):
            log.warning("folder writable by every user: patient data could be changed or "
                        "planted; chmod o-w", path=str(path))
    from osteo_node.node.supervisor import serve
    from osteo_node.store.schema import SchemaError

    try:
        return serve(settings)
    except SchemaError as exc:
        log.error("database_schema_not_ready", reason=str(exc))
        print(f"osteo-node serve: {exc}", file=sys.stderr)
        return 1


def _roles_from_argument(value: str) -> tuple[str, ...] | None:
    """The roles of ``--roles``; None (after saying why on stderr) when they are not valid."""
    from osteo_node.config.node_section import RoleError, parse_roles

    try:
        return parse_roles(value)
    except RoleError as exc:
        print(f"osteo-node serve: --roles: {exc}", file=sys.stderr)
        return None
