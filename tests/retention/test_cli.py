"""``osteo-node retention run [--dry-run]`` and what ``osteo-node status`` shows about
retention (text and ``--json``), on a node database and real spool and outbox folders."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from osteo_node.cli.main import main
from osteo_node.store.db import make_engine
from osteo_node.store.schema import upgrade
from tests.retention.support import HOUR, Clock, Node, Received


@pytest.fixture
def node(tmp_path: Path) -> Node:
    engine = make_engine(f"sqlite:///{tmp_path / 'node.db'}")
    upgrade(engine)
    # the node's data is made 100 h ago; the commands run with the real clock
    return Node(engine, tmp_path, Clock(time.time() - 100 * HOUR))


@pytest.fixture
def config(tmp_path: Path, node: Node) -> Path:
    path = tmp_path / "node.yaml"
    path.write_text(yaml.safe_dump({
        "dicom": {"allowed_callers": ["STORESCU"]},
        "storage": {"spool_dir": str(node.spool_dir), "outbox_dir": str(node.outbox_dir),
                    "database_url": f"sqlite:///{node.root / 'node.db'}"},
        "retention": {"spool_max_age_hours": 72, "outbox_max_age_hours": 168},
    }), encoding="utf-8")
    return path


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    capsys.readouterr()  # what the test's own set-up printed
    code = main([*args])
    return code, capsys.readouterr().out


def _status(capsys: pytest.CaptureFixture[str], config: Path) -> dict[str, Any]:
    code, out = _cli(capsys, "status", "--config", str(config), "--json")
    assert code == 0
    info: dict[str, Any] = json.loads(out)
    return info["retention"]


def _two_series(node: Node) -> tuple[Received, Received]:
    delivered = node.analyse(node.receive(3))
    node.clock.advance(1)
    assert node.deliver() == 1
    waiting = node.analyse(node.receive(2))  # its result never reaches PACS
    return delivered, waiting


def test_f_status_and_retention_run(node: Node, config: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    delivered, waiting = _two_series(node)
    before = _status(capsys, config)
    assert before["available"] and before["enabled"]
    spool = before["spool"]
    assert (spool["series"], spool["settled_series"], spool["due_series"]) == (2, 1, 1)
    assert spool["bytes"] == delivered.bytes + waiting.bytes
    assert spool["due_bytes"] == delivered.bytes
    assert spool["blocked"] == {"results_undelivered": 1}
    assert before["outbox"]["objects"] == 2 and before["outbox"]["settled_objects"] == 1
    assert before["outbox"]["due_objects"] == 0  # delivered 99 h ago: kept 168 h
    assert before["purged_last_24h"]["spool_series"] == 0 and before["last_run"] is None

    code, out = _cli(capsys, "retention", "run", "--config", str(config), "--dry-run")
    assert code == 0
    assert "dry run: nothing is deleted" in out
    assert f"would delete spool series {delivered.series_uid}" in out
    assert waiting.series_uid not in out
    assert all(p.is_file() for p in delivered.files)

    code, out = _cli(capsys, "retention", "run", "--config", str(config))
    assert code == 0
    assert f"deleted spool series {delivered.series_uid}" in out and "reason age" in out
    assert "deleted: 1 series (3 files" in out
    assert not any(p.exists() for p in delivered.files)
    assert all(p.is_file() for p in waiting.files)

    after = _status(capsys, config)
    assert (after["spool"]["series"], after["spool"]["bytes"]) == (1, waiting.bytes)
    day = after["purged_last_24h"]
    assert (day["spool_series"], day["spool_files"], day["spool_bytes"]) == (
        1, 3, delivered.bytes)
    run = after["last_run"]
    assert (run["spool_series"], run["spool_files"], run["errors"]) == (1, 3, 0)
    assert run["finished_at"] >= run["started_at"]

    code, out = _cli(capsys, "status", "--config", str(config))
    assert code == 0
    assert "retention: on" in out
    assert "spool: 1 series" in out and "kept: 1 results undelivered" in out
    assert "purged in the last 24 h: 1 series (3 files" in out
    assert "last run: finished 0 min ago: 1 series" in out

    code, out = _cli(capsys, "retention", "run", "--config", str(config), "--json")
    assert code == 0 and json.loads(out)["totals"]["spool_series"] == 0  # nothing left due


def test_retention_run_creates_no_database(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "node.yaml"
    missing = tmp_path / "nowhere" / "node.db"
    path.write_text(yaml.safe_dump({"dicom": {"allowed_callers": ["X"]},
                                    "storage": {"database_url": f"sqlite:///{missing}"}}))
    assert main(["retention", "run", "--config", str(path)]) == 1
    assert "no database file" in capsys.readouterr().err
    assert not missing.parent.exists()
