"""The ``retention`` process of ``serve``: a retention round at start and then every
``retention.interval_seconds``.

Its own process (not a thread of the assembler or the outbox sender): it needs both the spool
and the outbox folder (the listener has only the one, the sender runs only with destinations,
the assembler needs neither), a long round (a first run on a full spool) must not delay job
queueing or sending, and on several hosts it runs where the storage is. A failed round (a
database hiccup, a defect) is logged and the next one runs on time; the process never dies of
it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import structlog

from osteo_node.config import Settings
from osteo_node.retention.run import run_once
from osteo_node.safe_errors import describe
from osteo_node.store.db import make_engine

log = structlog.get_logger(__name__)


def run_retention(settings: Settings, stop: threading.Event,
                  clock: Callable[[], float] = time.time) -> None:
    """Run rounds until ``stop`` is set (the database is already migrated: ``serve``'s
    supervisor does that once, before any child starts)."""
    r = settings.retention
    engine = make_engine(settings.storage.database_url)
    log.info("retention_started", interval_seconds=r.interval_seconds,
             spool_max_age_hours=r.spool_max_age_hours, spool_max_total_gb=r.spool_max_total_gb,
             outbox_max_age_hours=r.outbox_max_age_hours,
             outbox_max_total_gb=r.outbox_max_total_gb)
    try:
        while not stop.is_set():
            try:
                run_once(engine, r, settings.storage.spool_dir, settings.storage.outbox_dir,
                         clock, stopping=stop.is_set)
            except Exception as exc:  # noqa: BLE001 - the next round tries again
                log.error("retention_run_failed", error=describe(exc))
            stop.wait(r.interval_seconds)
    finally:
        engine.dispose()
        log.info("retention_stopped")
