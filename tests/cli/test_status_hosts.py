"""``osteo-node status`` shows every host's processes from their heart-beats, alive or stale
(issue 14), in text and JSON, next to the queue counts."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml
from sqlalchemy import text

from osteo_node.cli.main import main
from osteo_node.node import processes
from osteo_node.store.db import make_engine
from osteo_node.store.schema import upgrade


def _config(tmp_path: Path, url: str) -> str:
    cfg = {"dicom": {"allowed_callers": ["STORESCU"]},
           "storage": {"spool_dir": str(tmp_path / "spool"),
                       "outbox_dir": str(tmp_path / "outbox"), "database_url": url},
           "node": {"heartbeat_seconds": 5}}
    path = tmp_path / "node.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return str(path)


def test_status_lists_each_hosts_processes_alive_or_stale(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'node.db'}"
    engine = make_engine(url)
    upgrade(engine)
    now = time.time()
    processes.register(engine, "host-a", "listener", "listener", pid=101, now=now - 2)
    processes.register(engine, "host-a", "worker-0", "worker", pid=102, now=now - 2)
    processes.register(engine, "host-b", "worker-0", "worker", pid=201, now=now - 60)
    engine.dispose()
    config = _config(tmp_path, url)
    capsys.readouterr()  # what the set-up logged

    assert main(["status", "--config", config, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    hosts = info["hosts"]
    assert sorted(hosts) == ["host-a", "host-b"]
    assert [(p["process"], p["pid"], p["state"]) for p in hosts["host-a"]] == [
        ("listener", 101, "alive"), ("worker-0", 102, "alive")]
    (b,) = hosts["host-b"]
    assert b["state"] == "stale" and b["age_s"] >= 59  # 3 beats of 5 s missed
    assert info["queue_depth"] == 0 and info["jobs"]["queued"] == 0

    assert main(["status", "--config", config]) == 0
    out = capsys.readouterr().out
    assert "hosts (stale: no heart-beat for more than 15 s):" in out
    assert "  host-a: 2 of 2 processes alive" in out
    assert "  host-b: 0 of 1 processes alive" in out
    assert "queue depth: 0" in out


def test_status_of_a_database_before_the_heartbeat_revision(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'node.db'}"
    engine = make_engine(url)
    upgrade(engine)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE node_processes"))
    engine.dispose()
    capsys.readouterr()
    assert main(["status", "--config", _config(tmp_path, url), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["hosts"] is None
    assert main(["status", "--config", _config(tmp_path, url)]) == 0
    assert "hosts: unknown" in capsys.readouterr().out
