"""structlog configuration: JSON lines in production, readable in a terminal.

Never log patient names or IDs: log UIDs. ``scrub`` drops keys that commonly carry PHI in case a
caller passes a dataset attribute by mistake.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
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


class RepeatFilter(logging.Filter):
    """Rate-limits third-party log lines that a misbehaving peer can trigger at will.

    pynetdicom logs one ERROR per unrecognised PDU, with a traceback per reset connection: 1 MB
    of garbage on the DICOM port made ~90 error lines. For loggers under ``prefixes`` the same
    message (digits and hex codes ignored) passes at most once per ``window_s``; the next one
    that passes says how many were held back. Tracebacks of connection errors are dropped (the
    message says what happened)."""

    _variable = re.compile(r"0x[0-9A-Fa-f]+|\d+")

    def __init__(self, prefixes: tuple[str, ...] = ("pynetdicom",), window_s: float = 60.0,
                 clock: Any = time.monotonic) -> None:
        super().__init__()
        self.prefixes = prefixes
        self.window_s = window_s
        self.clock = clock
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self.prefixes):
            return True
        if record.exc_info and isinstance(record.exc_info[1], OSError):
            record.exc_info = None
            record.exc_text = None
        key = self._variable.sub("#", str(record.msg))
        now = self.clock()
        with self._lock:
            if now - self._last.get(key, -1e18) < self.window_s:
                self._held[key] = self._held.get(key, 0) + 1
                return False
            self._last[key] = now
            held = self._held.pop(key, 0)
        if held:
            record.msg = f"{record.getMessage()} (and {held} similar held back)"
            record.args = None
        return True


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
    handler.addFilter(RepeatFilter())
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
    # alembic narrates every migration step at INFO; osteo_node.store.schema logs the outcome
    logging.getLogger("alembic").setLevel(max(lvl, logging.WARNING))
    # pydicom logs invalid element values WITH the value ("Invalid value for VR DA:
    # '1951-03-09'"): patient data. The exporters check every value they copy themselves
    # (exporters.common.sanitized_header) and log only the keyword.
    from pydicom import config as pydicom_config

    pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE
    logging.getLogger("pydicom").setLevel(logging.ERROR)
