"""Background indexing of spooled instances: one writer thread, batched transactions.

The C-STORE is acknowledged once the instance file is durable in the spool (the spool file is
the durable record). Its index row follows within milliseconds, written by this thread in
batches (one short transaction for everything that arrived meanwhile). This keeps the database
off the C-STORE critical path: a peer's transfer is not slowed down by index commits, and a
database held busy by another process (a backup, a long export) does not stall the scanners.

A crash or a stop before a row is committed leaves a spooled file without a row; start-up
reconciliation (:func:`osteo_node.store.reconcile.reconcile_spool`) indexes it, the same path
that covers a crash between filing and indexing. Database errors are retried with backoff;
rows are never dropped while the process lives.
"""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path

import structlog
from pydicom.errors import InvalidDicomError
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from osteo_node.store.index import InstanceRecord, record_instance
from osteo_node.store.reconcile import record_from_file
from osteo_node.store.spool import SpoolKey

log = structlog.get_logger(__name__)

_STOP = object()
# a record to write, or a spooled file whose header gives the record (read by the writer)
Pending = InstanceRecord | tuple[SpoolKey, Path]


class IndexWriter:
    """Indexes :class:`InstanceRecord` s submitted by the C-STORE handler."""

    def __init__(self, engine: Engine, *, max_batch: int = 256, max_backoff_s: float = 5.0
                 ) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self.max_backoff_s = max_backoff_s
        self._queue: queue.Queue[object] = queue.Queue()
        self._cond = threading.Condition()
        self._submitted = 0
        self._done = 0
        self._abandon = threading.Event()
        self._thread = threading.Thread(target=self._run, name="index-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, record: InstanceRecord, received_at: float) -> None:
        with self._cond:
            self._submitted += 1
        self._queue.put((record, received_at))

    def submit_spooled(self, key: SpoolKey, path: Path, received_at: float) -> None:
        """Index an instance already in the spool (a duplicate C-STORE) from the spooled file's
        own header. The header is read here, in the writer thread, not on the C-STORE path;
        insertion is idempotent, so an already indexed instance is left as it is (also one
        whose file retention deleted: this copy was not stored, see ``record_instance``)."""
        with self._cond:
            self._submitted += 1
        self._queue.put(((key, path), received_at))

    def pending(self) -> int:
        with self._cond:
            return self._submitted - self._done

    def flush(self, timeout: float) -> bool:
        """Wait until every submitted row is committed; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._done < self._submitted:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def stop(self, timeout: float = 10.0) -> bool:
        """Write what is queued (for up to ``timeout`` s), then stop. Rows not written by then
        are indexed from the spool at the next start. Returns True when nothing was left."""
        if not self._thread.is_alive():
            return self.pending() == 0
        flushed = self.flush(timeout)
        if not flushed:
            self._abandon.set()
            log.warning("index writer stopped with rows pending; the next start indexes them "
                        "from the spool", rows=self.pending())
        self._queue.put(_STOP)
        self._thread.join(timeout)
        return flushed

    def _next_batch(self) -> tuple[list[tuple[Pending, float]], bool]:
        first = self._queue.get()
        if first is _STOP:
            return [], True
        batch = [first]
        stop = False
        while len(batch) < self.max_batch:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                stop = True
                break
            batch.append(item)
        return batch, stop  # type: ignore[return-value]

    def _write(self, batch: list[tuple[InstanceRecord, float, bool]]) -> bool:
        delay = 0.05
        while not self._abandon.is_set():
            try:
                with self.engine.begin() as conn:
                    for record, received_at, revive in batch:
                        record_instance(conn, record, received_at, revive=revive)
                return True
            except SQLAlchemyError as exc:  # database busy or gone: retry, never drop
                log.error("index write failed; retrying", rows=len(batch),
                          error=type(exc).__name__, retry_in_s=round(delay, 2))
                self._abandon.wait(delay)
                delay = min(delay * 2.0, self.max_backoff_s)
            except Exception:  # a defect, not the database: do not spin on it
                log.exception("index write failed unexpectedly; the rows are indexed from the "
                              "spool at the next start",
                              sop_instance_uids=[r.sop_uid for r, _t, _v in batch])
                return False
        return False

    def _resolve(self, items: list[tuple[Pending, float]]
                 ) -> list[tuple[InstanceRecord, float, bool]]:
        """(record, received at, revive): a stored file's record may revive a purged row; a
        duplicate's (indexed from the spooled file) may not."""
        out = []
        for item, received_at in items:
            if isinstance(item, InstanceRecord):
                out.append((item, received_at, True))
                continue
            key, path = item
            try:
                out.append((record_from_file(key, path), received_at, False))
            except (OSError, InvalidDicomError, AttributeError, ValueError) as exc:
                log.warning("spooled instance not indexed: its file cannot be read",
                            sop_instance_uid=key.sop_uid, error=type(exc).__name__)
        return out

    def _run(self) -> None:
        while True:
            batch, stop = self._next_batch()
            if batch:
                self._write(self._resolve(batch))
                with self._cond:
                    self._done += len(batch)
                    self._cond.notify_all()
            if stop:
                return
