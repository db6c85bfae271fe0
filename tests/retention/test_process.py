"""The ``retention`` process of ``serve`` (its loop, in a thread here): it deletes what is due
round after round, and a failed round is logged and followed by the next one on time."""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path

from osteo_node.config import settings_from_mapping
from osteo_node.retention.process import run_retention
from osteo_node.store.db import make_engine
from osteo_node.store.schema import upgrade
from tests.node.support import wait_until
from tests.retention.support import HOUR, Clock, Node


class FlakyClock(Clock):
    """The first round's clock read fails (a defect anywhere in a round looks the same)."""

    calls = 0

    def __call__(self) -> float:
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("clock read failed")
        return self.t


def test_the_loop_survives_a_failed_round_and_deletes_in_the_next(
        tmp_path: Path, log_stream: io.StringIO) -> None:
    url = f"sqlite:///{tmp_path / 'node.db'}"
    settings = settings_from_mapping({
        "dicom": {"allowed_callers": ["X"]},
        "storage": {"spool_dir": str(tmp_path / "spool"), "outbox_dir": str(tmp_path / "outbox"),
                    "database_url": url},
        "retention": {"interval_seconds": 1, "spool_max_age_hours": 72},
    }, tmp_path)
    engine = make_engine(url)
    upgrade(engine)
    node = Node(engine, tmp_path)
    rec = node.analyse(node.receive(2))
    node.deliver()
    clock = FlakyClock(node.clock.t + 100 * HOUR)
    stop = threading.Event()
    loop = threading.Thread(target=run_retention, args=(settings, stop, clock), daemon=True)
    loop.start()
    try:
        wait_until(lambda: not any(p.exists() for p in rec.files), 30, what="files deleted")
    finally:
        stop.set()
        loop.join(30)
    assert not loop.is_alive()
    events = [json.loads(line)["event"] for line in log_stream.getvalue().splitlines()]
    assert events.index("retention_run_failed") < events.index("retention_series_purged")
    assert events[-1] == "retention_stopped"
    engine.dispose()
