"""``osteo-node serve --config FILE [--allow-root]``: run the DICOM node (listener, assembler,
workers, outbox).

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
from pathlib import Path
from typing import Any

UMASK = 0o027


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("serve", help="run the DICOM node")
    p.add_argument("--config", required=True, help="YAML configuration file")
    p.add_argument("--allow-root", action="store_true",
                   help="run even as root (not recommended: use a dedicated user)")
    p.set_defaults(func=run)


def world_writable(path: Path) -> bool:
    try:
        return bool(path.stat().st_mode & stat.S_IWOTH)
    except OSError:
        return False


def run(args: argparse.Namespace) -> int:
    from osteo_node import logging_setup
    from osteo_node.cli.common import settings_or_report
    from osteo_node.node.supervisor import serve

    if hasattr(os, "geteuid") and os.geteuid() == 0 and not args.allow_root:
        print("osteo-node serve: refusing to run as root; run it as a dedicated user (see "
              "systemd/osteo-node.service) or pass --allow-root", file=sys.stderr)
        return 2
    settings = settings_or_report(args.config)
    if settings is None:
        return 1
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
    return serve(settings)
