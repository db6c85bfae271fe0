"""Helpers shared by the sub-commands."""

from __future__ import annotations

import sys
from pathlib import Path

from osteo_node.config import ConfigError, Settings, load_settings


def settings_or_report(path: str | Path) -> Settings | None:
    """Load and validate the configuration; on problems print them to stderr and return None
    (the caller exits with status 1)."""
    try:
        return load_settings(path)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return None
