"""``osteo-node`` command line: one sub-command per module in :mod:`osteo_node.cli`.

Each sub-command module exposes ``add_parser(subparsers) -> None`` (setting ``func`` via
``set_defaults``) and ``run(args) -> int``. Imports are lazy so ``osteo-node --help`` is fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from osteo_node import __version__

# name -> module under osteo_node.cli. Add a line here when a sub-command lands.
COMMANDS: dict[str, str] = {
    "serve": "serve",
    "check-config": "check_config",
    "status": "status",
    "analyze": "analyze",
    "evaluate": "evaluate",
    "worklist": "worklist",
    "assess": "assess",
    "dashboard": "dashboard",
    "outbox": "outbox",
    "evaluate-mr": "evaluate_mr",
    "web-user": "web_user",
    "db": "db",
    "retention": "retention",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="osteo-node",
        description="Opportunistic osteoporosis / vertebral fracture screening DICOM node "
        "(decision support, not a diagnosis).",
    )
    parser.add_argument("--version", action="version", version=f"osteo-node {__version__}")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")
    parser.add_argument(
        "--log-format", choices=("auto", "json", "console"), default="auto",
        help="auto: JSON unless stderr is a terminal",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMANDS.values():
        importlib.import_module(f"osteo_node.cli.{module_name}").add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    from osteo_node import logging_setup

    json = logging_setup.json_flag(args.log_format)
    logging_setup.configure(args.log_level, json=json)
    result: int = args.func(args)
    return result


def entry() -> None:
    sys.exit(main())
