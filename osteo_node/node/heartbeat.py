"""A process's heart-beat: a daemon thread that keeps its ``node_processes`` row fresh
(:mod:`osteo_node.node.processes`), so ``osteo-node status`` shows what runs on every host and
what stopped beating. Database trouble is logged and retried at the next beat; it never stops
the process it describes."""

from __future__ import annotations

import threading

import structlog
from sqlalchemy import Engine

from osteo_node.node import processes
from osteo_node.safe_errors import describe
from osteo_node.store.db import make_engine

log = structlog.get_logger(__name__)


class Heartbeat:
    def __init__(self, database_url: str, host: str, process: str, role: str,
                 interval_s: float) -> None:
        self.host = host
        self.process = process
        self.role = role
        self.interval_s = interval_s
        self._url = database_url
        self._engine: Engine | None = None
        self._row: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-{process}",
                                        daemon=True)

    def start(self) -> Heartbeat:
        self._engine = make_engine(self._url)
        self._beat()
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop beating and remove the row (a clean stop is not a stale process)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(self.interval_s + 5)
        if self._engine is None:
            return
        try:
            if self._row is not None:
                processes.forget(self._engine, self._row)
        except Exception as exc:  # noqa: BLE001 - the row just goes stale
            log.warning("heartbeat_remove_failed", process=self.process, error=describe(exc))
        finally:
            self._engine.dispose()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._beat()

    def _beat(self) -> None:
        assert self._engine is not None
        try:
            if self._row is None or not processes.beat(self._engine, self._row):
                self._row = processes.register(self._engine, self.host, self.process,
                                               self.role)
        except Exception as exc:  # noqa: BLE001 - try again at the next beat
            log.warning("heartbeat_failed", process=self.process, error=describe(exc))
