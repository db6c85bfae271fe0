"""``osteo-node outbox list|retry|purge`` on a real configuration and database."""

from __future__ import annotations

import json
import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from osteo_node.cli.main import main
from osteo_node.outbox import store
from osteo_node.outbox.policy import Destination, RetryPolicy
from osteo_node.store.db import make_engine
from osteo_node.store.schema import upgrade
from tests.outbox.objects import secondary_capture


@pytest.fixture
def config(tmp_path: Path) -> Path:
    cfg = {
        "dicom": {"allowed_callers": ["STORESCU"]},
        "storage": {
            "spool_dir": str(tmp_path / "spool"),
            "outbox_dir": str(tmp_path / "outbox"),
            "database_url": f"sqlite:///{tmp_path / 'node.db'}",
        },
        "destinations": [
            {"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": 4242},
        ],
    }
    path = tmp_path / "node.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_outbox_cli_list_retry_purge(
    config: Path, tmp_path: Path, ct_small: Dataset, capsys: pytest.CaptureFixture[str]
) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'node.db'}")
    outbox = tmp_path / "outbox"
    pacs = Destination("pacs", "PACS", "127.0.0.1", 4242)
    series = generate_uid()
    a, b = (secondary_capture(ct_small, series, i) for i in (1, 2))
    upgrade(engine)  # the schema step makes them; the CLI never does
    assert main(["outbox", "--config", str(config), "list"]) == 0
    assert "outbox: empty" in capsys.readouterr().out

    store.enqueue(engine, outbox, [a, b], [pacs])
    first, second = store.claim_due(engine, outbox, ["pacs"], store.utcnow())
    store.mark_sent(engine, first, store.utcnow() - timedelta(days=3))
    store.mark_failed_attempt(  # the PACS refused the object itself: failed for good
        engine, second, store.utcnow(), RetryPolicy(max_attempts=1),
        "C-STORE status 0xA900", permanent=True)

    assert main(["outbox", "--config", str(config), "list", "--state", "failed"]) == 0
    out = capsys.readouterr().out
    assert "pacs: failed 1, sent 1" in out
    assert second.sop_instance_uid in out and "0xA900" in out
    assert first.sop_instance_uid not in out
    assert str(ct_small.PatientName) not in out

    assert main(["outbox", "--config", str(config), "list", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["counts"] == {"pacs": {"failed": 1, "sent": 1}} and len(data["items"]) == 2

    assert main(["outbox", "--config", str(config), "retry", "--destination", "nope"]) == 2
    assert main(["outbox", "--config", str(config), "retry"]) == 0
    assert "re-queued 1 failed item(s)" in capsys.readouterr().out
    (again,) = store.list_items(engine, sop_instance_uid=second.sop_instance_uid)
    assert (again.state, again.attempts) == ("pending", 0)

    assert main(["outbox", "--config", str(config), "purge", "--older-than-days", "1"]) == 0
    assert "removed 1 file(s)" in capsys.readouterr().out
    assert not first.path.exists() and second.path.exists()
    engine.dispose()


def test_outbox_cli_bad_config_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["outbox", "--config", str(tmp_path / "missing.yaml"), "list"]) == 1
    assert "missing.yaml" in capsys.readouterr().err


@pytest.mark.parametrize("action", [["list"], ["retry"], ["purge", "--older-than-days", "1"]])
def test_outbox_cli_mistyped_database_is_an_error_and_creates_nothing(
    tmp_path: Path, action: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = tmp_path / "typo" / "node.db"
    cfg = {
        "dicom": {"allowed_callers": ["STORESCU"]},
        "storage": {"spool_dir": str(tmp_path / "spool"), "outbox_dir": str(tmp_path / "outbox"),
                    "database_url": f"sqlite:///{wrong}"},
    }
    path = tmp_path / "node.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["outbox", "--config", str(path), *action]) == 1
    captured = capsys.readouterr()
    assert "no database file at" in captured.err and str(wrong) in captured.err
    assert captured.out == ""
    assert not wrong.parent.exists()


def test_outbox_cli_database_without_outbox_tables_is_an_error(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "node.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE unrelated (x INTEGER)")
    assert main(["outbox", "--config", str(config), "list"]) == 1
    assert "has no osteo-node tables outbox_items, outbox_objects" in capsys.readouterr().err
    with sqlite3.connect(db) as conn:
        names = [t for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    assert names == ["unrelated"]
