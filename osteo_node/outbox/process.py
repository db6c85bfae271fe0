"""The outbox sender as its own process: :func:`run_sender` (the node's supervisor starts it)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from osteo_node.outbox.delivery import OutboxSender
from osteo_node.outbox.policy import Destination, RetryPolicy, SenderSettings


def run_sender(
    database_url: str,
    outbox_dir: str | Path,
    destinations: Sequence[Destination],
    retry: RetryPolicy,
    *,
    stop_event: threading.Event | None = None,
    settings: SenderSettings | None = None,
    log_level: str | None = None,
) -> int:
    """Entry point of the sender process: take up interrupted items (unless
    ``settings.recover_at_start`` is False), deliver until stopped (``stop_event``, or
    SIGTERM/SIGINT when none is given). Returns 0. The tables are the migrations'
    (``osteo_node.store.schema``)."""
    from osteo_node.store.db import make_engine

    if log_level is not None:
        from osteo_node.logging_setup import configure

        configure(log_level)
    engine = make_engine(database_url)
    sender = OutboxSender(engine, Path(outbox_dir), destinations, retry, settings=settings)
    stop = stop_event if stop_event is not None else threading.Event()
    if stop_event is None and threading.current_thread() is threading.main_thread():

        def _on_signal(_signum: int, _frame: FrameType | None) -> None:
            stop.set()
            sender.wake()

        signal.signal(signal.SIGTERM, _on_signal)
        signal.signal(signal.SIGINT, _on_signal)
    if sender.settings.recover_at_start:
        sender.recover()
    try:
        sender.serve(stop)
    finally:
        engine.dispose()
    return 0
