"""Worker test settings: a node on ``db_url`` with its spool and outbox under ``tmp``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from osteo_node.config import Settings, settings_from_mapping


def destination(name: str, ae_title: str, port: int, send: list[str]) -> dict[str, Any]:
    return {"name": name, "ae_title": ae_title, "host": "127.0.0.1", "port": port,
            "send": send}


def worker_settings(tmp: Path, db_url: str, destinations: list[dict[str, Any]],
                    **sections: dict[str, Any]) -> Settings:
    return settings_from_mapping({
        "dicom": {"allowed_callers": ["X"]},
        "storage": {"spool_dir": str(tmp / "spool"), "outbox_dir": str(tmp / "out"),
                    "database_url": db_url},
        "destinations": destinations,
        **sections,
    }, tmp)
