"""structlog configuration: JSON lines in production, readable in a terminal.

Never log patient names or IDs: log UIDs. ``scrub`` drops keys that commonly carry PHI in case a
caller passes a dataset attribute by mistake.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog

PHI_KEYS = frozenset(
    {"patient_name", "patient_id", "PatientName", "PatientID", "patient_birth_date",
     "PatientBirthDate", "other_patient_ids", "OtherPatientIDs", "accession_number",
     "AccessionNumber", "name"}
)


def scrub(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    for key in PHI_KEYS.intersection(event_dict):
        event_dict[key] = "<redacted>"
    return event_dict


def json_flag(log_format: str) -> bool | None:
    """The ``json`` argument of :func:`configure` for a ``logging.format`` setting
    (auto | json | console)."""
    return {"auto": None, "json": True, "console": False}[log_format]


def configure(level: str = "INFO", json: bool | None = None, stream: TextIO | None = None) -> None:
    """Configure structlog and the stdlib root logger (pynetdicom logs through it).

    ``json=None`` picks JSON when the stream is not a terminal.
    """
    out = stream or sys.stderr
    if json is None:
        json = not out.isatty()
    lvl = getattr(logging, level.upper(), logging.INFO)
    renderer: Any = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        scrub,
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=shared,
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(lvl)
    # pynetdicom is chatty at INFO (it logs whole PDUs at DEBUG); keep it at WARNING by default.
    logging.getLogger("pynetdicom").setLevel(max(lvl, logging.WARNING))
    # highdicom logs every copied module at INFO ("copy attributes of module ...")
    logging.getLogger("highdicom").setLevel(max(lvl, logging.WARNING))
    # pydicom logs invalid element values WITH the value ("Invalid value for VR DA:
    # '1951-03-09'"): patient data. The exporters check every value they copy themselves
    # (exporters.common.sanitized_header) and log only the keyword.
    from pydicom import config as pydicom_config

    pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE
    logging.getLogger("pydicom").setLevel(logging.ERROR)
