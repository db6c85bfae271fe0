"""``osteo-node status`` reads the node's database and never creates one: a mistyped
``database_url`` is a clear error with a non-zero exit, not an empty node."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import yaml
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from sqlalchemy import inspect

from osteo_node.store.db import make_engine
from osteo_node.store.index import InstanceRecord, record_instance
from osteo_node.store.schema import upgrade
from tests.node.databases import node_postgres, reset_postgres  # noqa: F401 - fixture
from tests.outbox.postgres import TempPostgres

REPO = Path(__file__).resolve().parents[2]


def _status(tmp_path: Path, database_url: str, **sections: object
            ) -> subprocess.CompletedProcess[str]:
    cfg = {
        "dicom": {"allowed_callers": ["STORESCU"]},
        "storage": {"spool_dir": str(tmp_path / "spool"), "outbox_dir": str(tmp_path / "outbox"),
                    "database_url": database_url},
        **sections,
    }
    config = tmp_path / "node.yaml"
    config.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return subprocess.run([sys.executable, "-m", "osteo_node", "status", "--config",
                           str(config), "--json"], cwd=REPO, capture_output=True, text=True,
                          timeout=120, check=False)


def test_mistyped_sqlite_path_is_an_error_and_creates_nothing(tmp_path: Path) -> None:
    wrong = tmp_path / "no-such-folder" / "node.db"
    r = _status(tmp_path, f"sqlite:///{wrong}")
    assert r.returncode == 1, r.stdout
    assert r.stdout == ""
    assert "no database file at" in r.stderr and str(wrong) in r.stderr
    assert not wrong.exists() and not wrong.parent.exists()


def test_database_without_node_tables_is_an_error_and_stays_untouched(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE unrelated (x INTEGER)")
    r = _status(tmp_path, f"sqlite:///{other}")
    assert r.returncode == 1, r.stdout
    assert "has no osteo-node tables" in r.stderr and "instances" in r.stderr
    with sqlite3.connect(other) as conn:
        tables = [t for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    assert tables == ["unrelated"]


def test_status_of_a_node_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'node.db'}"
    engine = make_engine(url)
    upgrade(engine)
    st, se, sop = generate_uid(), generate_uid(), generate_uid()
    with engine.begin() as conn:
        record_instance(conn, InstanceRecord(st, se, sop, CTImageStorage, ExplicitVRLittleEndian,
                                             "CT", 1, f"{st}/{se}/{sop}.dcm", 10))
    engine.dispose()
    r = _status(tmp_path, url)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["index"] == {"studies": 1, "series": 1, "instances": 1}
    assert info["queue_depth"] == 0 and info["outbox"] == {}


def test_postgresql_wrong_database_or_no_tables_is_an_error(
        tmp_path: Path, node_postgres: TempPostgres) -> None:  # noqa: F811 - the fixture
    wrong = node_postgres.url.replace("@/postgres?", "@/no_such_db?")
    r = _status(tmp_path, wrong)
    assert r.returncode == 1 and "cannot open the database" in r.stderr, r.stderr
    reset_postgres(node_postgres.url)
    engine = make_engine(node_postgres.url)
    try:
        r = _status(tmp_path, node_postgres.url)
        assert r.returncode == 1 and "has no osteo-node tables" in r.stderr, r.stderr
        assert inspect(engine).get_table_names() == []
    finally:
        engine.dispose()


def test_status_shows_overdue_and_failed_results(tmp_path: Path) -> None:
    """Issue 16 (6): results the PACS has not taken for a long time are shown (oldest age,
    overdue count) and so are the ones that cannot be sent (failed)."""
    from datetime import timedelta

    from pydicom.dataset import Dataset

    from osteo_node.outbox import store
    from osteo_node.outbox.policy import Destination, RetryPolicy

    url = f"sqlite:///{tmp_path / 'node.db'}"
    engine = make_engine(url)
    upgrade(engine)
    objs = []
    for _ in range(2):
        ds = Dataset()
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
        ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID = (generate_uid()
                                                                         for _ in range(3))
        ds.Modality = "OT"
        objs.append(ds)
    pacs = Destination("pacs", "PACS", "127.0.0.1", 4242)
    then = store.utcnow() - timedelta(hours=2)
    store.enqueue(engine, tmp_path / "outbox", objs[:1], [pacs], kind="sc", now=then)
    policy = RetryPolicy(max_attempts=3)
    t = then
    for _ in range(3):  # three failed attempts: overdue
        (item,) = store.claim_due(engine, tmp_path / "outbox", ["pacs"], t)
        store.mark_failed_attempt(engine, item, t, policy, "could not connect")
        t += timedelta(minutes=20)
    store.enqueue(engine, tmp_path / "outbox", objs[1:], [pacs], kind="sc", now=t)
    (second,) = [i for i in store.claim_due(engine, tmp_path / "outbox", ["pacs"], t)
                 if i.sop_instance_uid == objs[1].SOPInstanceUID]
    store.mark_failed_attempt(engine, second, t, policy, "cannot read outbox file",
                              permanent=True)
    engine.dispose()
    r = _status(tmp_path, url, retry={"max_attempts": 3})
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    waiting = info["outbox_waiting"]["pacs"]
    assert waiting["oldest_pending_age_s"] > 7000 and waiting["overdue"] == 1
    assert [f["sop_instance_uid"] for f in info["outbox_failures"]] == [objs[1].SOPInstanceUID]
