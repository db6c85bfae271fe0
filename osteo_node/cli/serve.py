"""``osteo-node serve --config FILE``: run the DICOM node (listener, assembler, workers, outbox)."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("serve", help="run the DICOM node")
    p.add_argument("--config", required=True, help="YAML configuration file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from osteo_node import logging_setup
    from osteo_node.config import ConfigError, load_settings
    from osteo_node.node.supervisor import serve

    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    json = {"auto": None, "json": True, "console": False}[settings.logging.format]
    logging_setup.configure(settings.logging.level, json=json)
    return serve(settings)
