"""``osteo-node serve --config FILE``: run the DICOM node (listener, assembler, workers, outbox)."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("serve", help="run the DICOM node")
    p.add_argument("--config", required=True, help="YAML configuration file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from osteo_node import logging_setup
    from osteo_node.cli.common import settings_or_report
    from osteo_node.node.supervisor import serve

    settings = settings_or_report(args.config)
    if settings is None:
        return 1
    json = logging_setup.json_flag(settings.logging.format)
    logging_setup.configure(settings.logging.level, json=json)
    return serve(settings)
