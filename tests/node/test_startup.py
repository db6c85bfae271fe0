"""``osteo-node serve`` start-up: what a crash left in the spool is filed and indexed before the
port opens, by one spool check (the supervisor's); a restarted listener checks again."""

from __future__ import annotations

import io
import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import select

from osteo_node.store.db import make_engine
from osteo_node.store.index import instances
from osteo_node.store.spool import Spool, SpoolKey, preamble_for
from tests.node.support import (
    NodeProcess,
    echoscu,
    free_port,
    node_config,
    wait_until,
    write_config,
)
from tests.node.test_store_handler import small_ct

pytestmark = [pytest.mark.integration]


def _part10_body(st: str, se: str, sop: str) -> bytes:
    """``DICM`` + file meta + data set (a spool file without its preamble)."""
    buf = io.BytesIO()
    small_ct(st, se, sop, fill=3).save_as(buf, enforce_file_format=True)
    return buf.getvalue()[128:]


def _events(log: Path, name: str) -> list[dict[str, Any]]:
    out = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and rec.get("event") == name:
            out.append(rec)
    return out


def test_crash_leftovers_are_indexed_once_before_the_port_opens(tmp_path: Path) -> None:
    st, se = generate_uid(), generate_uid()
    filed_sop, slot_sop = generate_uid(), generate_uid()
    spool = Spool(tmp_path / "spool", slot_batch=2)
    spool.recover()
    # A crash after filing, before the index row: the file is in place, the index lacks it.
    spool.store(SpoolKey(st, se, filed_sop), [_part10_body(st, se, filed_sop)])
    # A crash after the slot's fsync, before filing: complete content under the slot name.
    body = _part10_body(st, se, slot_sop)
    (spool.slots_dir / "slot-crashed").write_bytes(preamble_for([body]) + body)

    port = free_port()
    markers = tmp_path / "markers"
    markers.mkdir()
    cfg = node_config(tmp_path, port, analysers={"CT": "tests.node.fake_analysers:recording"},
                      publisher="tests.node.fake_analysers:no_objects")
    log = tmp_path / "node.log"
    node = NodeProcess(write_config(tmp_path, cfg), log,
                       env={"OSTEO_TEST_ANALYSER_DIR": str(markers)})
    node.start(port)  # returns once the port is open
    engine = make_engine(cfg["storage"]["database_url"])
    try:
        with engine.connect() as conn:
            indexed = set(conn.execute(select(instances.c.sop_instance_uid)).scalars())
        assert indexed == {filed_sop, slot_sop}
        checks = _events(log, "spool checked")
        assert len(checks) == 1, checks
        assert (checks[0]["slots_recovered"], checks[0]["instances_reindexed"]) == (1, 2)
        assert spool.path_for(SpoolKey(st, se, slot_sop)).is_file()

        # A listener that dies is restarted and checks the spool itself.
        (pid,) = [e["pid"] for e in _events(log, "child started") if e["child"] == "listener"]
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: len(_events(log, "spool checked")) == 2, 60,
                   what="restarted listener's spool check")
        wait_until(lambda: echoscu(port).returncode == 0, 60, what="echo after restart")
        assert _events(log, "spool checked")[1]["instances_reindexed"] == 0
    finally:
        engine.dispose()
        assert node.stop() == 0
