"""The node database of a command that works on it offline: ``--config FILE`` (its
``storage.database_url``) or ``--db URL``, one of them."""

from __future__ import annotations

import argparse
from typing import Any


def add_database_arguments(container: Any, *, required: bool = True) -> None:
    """``--config`` / ``--db`` as a mutually exclusive pair on a parser or argument group."""
    g = container.add_mutually_exclusive_group(required=required)
    g.add_argument("--config", help="node YAML configuration (uses storage.database_url)")
    g.add_argument("--db", help="SQLAlchemy database URL, e.g. sqlite:///var/osteo_node.db")


def database_url(args: argparse.Namespace) -> str:
    """``--db``, else the configuration's ``storage.database_url`` (raises ``ConfigError``)."""
    from osteo_node.config import load_settings

    return str(args.db) if args.db else str(load_settings(args.config).storage.database_url)
