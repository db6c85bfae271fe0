"""The assembler process: turns quiet series into queued jobs."""

from __future__ import annotations

import threading

import structlog

from osteo_node.config import Settings
from osteo_node.queue.jobs import queue_complete_series
from osteo_node.store.db import make_engine

log = structlog.get_logger(__name__)


def run_assembler(settings: Settings, stop: threading.Event) -> None:
    engine = make_engine(settings.storage.database_url)
    q = settings.queue
    log.info("assembler started", series_quiet_seconds=q.series_quiet_seconds)
    try:
        while not stop.is_set():
            for job_id in queue_complete_series(engine, q.series_quiet_seconds):
                log.info("series complete; job queued", job_id=job_id)
            stop.wait(q.poll_seconds)
    finally:
        engine.dispose()
