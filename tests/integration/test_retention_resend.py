"""A series sent again after retention deleted it is analysed again normally (issue 14,
retention, acceptance point e): dcmtk storescu -> the node's real listener (spool + index) ->
assembler -> worker -> outbox -> a real C-STORE SCP as PACS -> retention deletes the spool
files -> storescu sends the same instances again -> a new generation is queued, analysed with
all its instances (the files are there again) and its results are delivered."""

from __future__ import annotations

import shutil
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
from osteo_node.store.index import instances, series
from osteo_node.worker.runner import WorkerContext, process_job
from tests.node.fake_analysers import secondary_capture
from tests.node.support import fill_uids, free_port, node_config, running_listener, storescu
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
