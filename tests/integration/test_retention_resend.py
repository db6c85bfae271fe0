"""Retention through the node's real DICOM path (issue 14, retention).

Acceptance point e: a series sent again after retention deleted it is analysed again normally:
dcmtk storescu -> the node's real listener (spool + index) -> assembler -> worker -> outbox -> a
real C-STORE SCP as PACS -> retention deletes the spool files -> storescu sends the same
instances again -> a new generation is queued, analysed with all its instances (the files are
there again) and its results are delivered. And ``osteo-node serve`` runs the retention child."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from sqlalchemy import select

from osteo_node.config import settings_from_mapping
from osteo_node.config.settings import Settings
from osteo_node.outbox.delivery import OutboxSender
from osteo_node.outbox.tables import outbox_items, outbox_objects
from osteo_node.pipeline.results import AnalysisOutput, AnalysisResult
from osteo_node.queue import jobs as jq
from osteo_node.retention.run import run_once
from osteo_node.store.db import make_engine
from osteo_node.store.index import instances, series
from osteo_node.worker.runner import WorkerContext, process_job
from tests.node.fake_analysers import secondary_capture
from tests.node.support import (
    REPO,
    NodeProcess,
    fill_uids,
    free_port,
    node_config,
    running_listener,
    storescu,
    wait_until,
    write_config,
)
from tests.outbox.conftest import FakePacs

pytestmark = [pytest.mark.integration]

HOUR = 3600.0


class ReadingAnalyser:
    """Reads every instance it is given (as an analysis would) and records what it saw."""

    name = "test-reading"

    def __init__(self) -> None:
        self.seen: list[list[str]] = []

    def analyse(self, paths: Sequence[Path]) -> AnalysisOutput:
        heads = [dcmread(p) for p in paths]  # fails if a file is missing or unreadable
        self.seen.append(sorted(str(h.SOPInstanceUID) for h in heads))
        h = heads[0]
        return AnalysisOutput(AnalysisResult("analysed", None, "CT", str(h.StudyInstanceUID),
                                             str(h.SeriesInstanceUID), None, None))


def _publish(output: AnalysisOutput, key: str, settings: object = None
             ) -> list[tuple[str, object]]:
    """One small Secondary Capture per analysis (UIDs from the job key), with the patient and
    study attributes a rejection note of a later generation copies."""
    objects = secondary_capture(output, key, settings)
    for _kind, ds in objects:
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "", "", "", ""
        ds.StudyDate, ds.StudyTime, ds.AccessionNumber = "20260101", "120000", ""
        ds.ReferringPhysicianName, ds.StudyID = "", "1"
    return objects


def _analyse_and_deliver(settings: Settings, listener: object, analyser: ReadingAnalyser,
                         now: float) -> jq.ClaimedJob:
    """What the assembler, a worker and the outbox sender do with a quiet series."""
    engine = listener.engine  # type: ignore[attr-defined]
    assert listener.indexer.flush(30)  # type: ignore[attr-defined]
    assert jq.queue_complete_series(engine, 0, now=now)
    job = jq.claim_next(engine, "w", 600, now=now)
    assert job is not None
    ctx = WorkerContext(settings, engine, lambda _m: analyser, _publish, "w")
    assert process_job(ctx, job) == jq.DONE
    report = OutboxSender(engine, settings.storage.outbox_dir, settings.destinations,
                          settings.retry).run_once()
    assert report.claimed == report.sent > 0, report
    return job


@pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk not installed")
def test_e_series_sent_again_after_purge_is_analysed_again(tmp_path: Path) -> None:
    ct = Path(get_testdata_file("CT_small.dcm"))
    sources = tmp_path / "src"
    sources.mkdir()
    for i in range(3):
        shutil.copy(ct, sources / f"{i}.dcm")
    files = fill_uids(sorted(sources.iterdir()), tmp_path / "sent")
    sops = sorted(str(dcmread(f).SOPInstanceUID) for f in files)
    pacs = FakePacs().start()
    try:
        port = free_port()
        cfg = node_config(tmp_path, port, results={"worklist": False})
        cfg["destinations"] = [{"name": "pacs", "ae_title": pacs.ae_title, "host": "127.0.0.1",
                                "port": pacs.port, "send": ["sc", "kos"]}]
        settings = settings_from_mapping(cfg, tmp_path)
        analyser = ReadingAnalyser()
        with running_listener(cfg, tmp_path) as listener:
            sent = storescu(port, files)
            assert sent.acknowledged == files, sent.output[-2000:]
            first = _analyse_and_deliver(settings, listener, analyser, time.time())
            spooled = sorted((tmp_path / "spool").rglob("*.dcm"))
            assert len(spooled) == 3

            # three days and more later: the delivered series' files go
            later = time.time() + 100 * HOUR
            report = run_once(listener.engine, settings.retention, settings.storage.spool_dir,
                              settings.storage.outbox_dir, lambda: later)
            assert [o.purged.files for o in report.spool_outcomes if o.purged] == [3]
            assert not any(p.exists() for p in spooled)
            with listener.engine.connect() as conn:
                assert conn.execute(select(series.c.purged_at, series.c.generation)).one() == (
                    later, 1)

            # the same series sent again: stored and indexed as new, analysed again
            again = storescu(port, files)
            assert again.acknowledged == files, again.output[-2000:]
            assert "duplicate" not in again.output.lower()
            assert all(p.is_file() for p in spooled)
            second = _analyse_and_deliver(settings, listener, analyser, later + HOUR)
            with listener.engine.connect() as conn:
                purged = conn.execute(select(instances.c.purged_at)).scalars().all()
                row = conn.execute(select(series.c.purged_at, series.c.generation,
                                          series.c.instance_count)).one()
                results = conn.execute(
                    select(outbox_objects.c.job_id, outbox_objects.c.kind, outbox_items.c.state)
                    .join_from(outbox_objects, outbox_items)
                    .order_by(outbox_objects.c.created_at)).all()
    finally:
        pacs.stop()
    assert purged == [None, None, None]
    assert tuple(row) == (None, 2, 3)
    assert (first.generation, second.generation) == (1, 2)
    assert analyser.seen == [sops, sops]  # both analyses read all three instances
    # the second generation's result, and the note withdrawing the first's, reached the PACS
    assert sorted((j, k, s) for j, k, s in results) == sorted([
        (str(first.id), "sc", "sent"), (str(second.id), "sc", "sent"),
        (f"{second.id}/rejection", "kos", "sent")])
    assert len(pacs.received) == 3


@pytest.mark.skipif(shutil.which("storescp") is None, reason="dcmtk not installed")
def test_serve_runs_retention_after_delivery(tmp_path: Path) -> None:
    """``osteo-node serve`` starts the retention child: with limits of zero hours a series
    and its result are deleted as soon as the result reached the PACS (dcmtk storescp), and
    ``status`` says so."""
    received = tmp_path / "pacs"
    received.mkdir()
    pacs_port = free_port()
    pacs = subprocess.Popen(["storescp", "-aet", "PACS", "-od", str(received), str(pacs_port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    sources = tmp_path / "src"
    sources.mkdir()
    for i in range(2):
        shutil.copy(get_testdata_file("CT_small.dcm"), sources / f"{i}.dcm")
    files = fill_uids(sorted(sources.iterdir()), tmp_path / "sent")
    base = tmp_path / "node"
    markers = base / "markers"
    markers.mkdir(parents=True)
    port = free_port()
    cfg = node_config(base, port, analysers={"CT": "tests.node.fake_analysers:recording"},
                      publisher="tests.node.fake_analysers:secondary_capture",
                      destinations=[{"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1",
                                     "port": pacs_port, "send": ["sc"]}],
                      retention={"interval_seconds": 1, "spool_max_age_hours": 0,
                                 "outbox_max_age_hours": 0})
    config = write_config(base, cfg)
    node = NodeProcess(config, base / "node.log", env={"OSTEO_TEST_ANALYSER_DIR": str(markers)})
    node.start(port)
    engine = make_engine(f"sqlite:///{base / 'node.db'}")
    try:
        assert storescu(port, files).acknowledged == files
        wait_until(lambda: len(list(received.iterdir())) == 1, 90, what="result at the PACS")

        def purged() -> bool:
            with engine.connect() as conn:
                return conn.execute(select(series.c.purged_at)).scalar_one() is not None

        wait_until(purged, 60, what="series purged by the retention child")
        wait_until(lambda: not list((base / "outbox").rglob("*.dcm")), 60,
                   what="result file purged")
        assert not list((base / "spool").rglob("*.dcm"))
        status = subprocess.run([sys.executable, "-m", "osteo_node", "status", "--config",
                                 str(config), "--json"], cwd=REPO, capture_output=True,
                                text=True, timeout=120, check=True)
        day = json.loads(status.stdout)["retention"]["purged_last_24h"]
        assert (day["spool_series"], day["spool_files"], day["outbox_objects"]) == (1, 2, 1)
        log = (base / "node.log").read_text()
        assert '"retention_series_purged"' in log and '"process": "retention"' in log
    finally:
        engine.dispose()
        assert node.stop() == 0
        pacs.terminate()
        pacs.wait(10)
