from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from pydicom import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from sqlalchemy import Engine, select

from osteo_node.config import settings_from_mapping
from osteo_node.config.settings import Settings
from osteo_node.outbox.tables import outbox_items
from osteo_node.pipeline.registry import Analyser
from osteo_node.pipeline.results import AnalysisOutput, AnalysisResult
from osteo_node.queue import jobs as jq
from osteo_node.store.db import make_engine
from osteo_node.store.index import InstanceRecord, record_instance
from osteo_node.worker.publish import exporters_publisher, resolve_publisher
from osteo_node.worker.runner import WorkerContext, lookup_from_settings, process_job
from tests.worker.support import destination, worker_settings


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return worker_settings(tmp_path, db_url, [destination("pacs", "PACS", 104, ["sc"])],
                           queue={"max_job_attempts": 2})


@pytest.fixture
def engine(settings: Settings) -> Engine:
    return make_engine(settings.storage.database_url)


def _job(engine: Engine, modality: str = "CT", n: int = 3) -> jq.ClaimedJob:
    series_uid = generate_uid()
    with engine.begin() as conn:
        for i in range(n):
            sop = generate_uid()
            record_instance(conn, InstanceRecord("1.2.3", series_uid, sop, CTImageStorage,
                                                 ExplicitVRLittleEndian, modality, n - i,
                                                 f"1.2.3/{series_uid}/{sop}.dcm", 1), 100.0)
    jq.queue_complete_series(engine, 1, now=200.0)
    job = jq.claim_next(engine, "test", 60)
    assert job is not None
    return job


def _state(engine: Engine, job: jq.ClaimedJob) -> tuple[str, str | None, int]:
    with engine.connect() as conn:
        r = conn.execute(select(jq.jobs).where(jq.jobs.c.id == job.id)).one()
    return r.state, r.last_error, r.objects


def _sc(series_uid: str) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.3", generate_uid()
    ds.Modality = "OT"
    return ds


class FakeAnalyser:
    name = "fake"

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.seen: list[Path] = []

    def analyse(self, paths: Sequence[Path]) -> AnalysisOutput:
        if self.fail:
            raise RuntimeError("model exploded")
        self.seen = list(paths)
        return AnalysisOutput(AnalysisResult("analysed", None, "CT", "1.2.3", "4.5", None, None))


def _ctx(settings: Settings, engine: Engine, analyser: Analyser | None) -> WorkerContext:
    return WorkerContext(settings, engine, lambda _m: analyser,
                         lambda out, key, _s: [("sc", _sc("1.2.3"))], "test")


def test_no_analyser_ends_job_without_result(settings: Settings, engine: Engine) -> None:
    job = _job(engine, modality="CR")
    assert process_job(_ctx(settings, engine, None), job) == jq.NO_ANALYSER
    state, error, objects = _state(engine, job)
    assert state == "no_analyser" and "no analyser registered for modality CR" in str(error)
    assert objects == 0
    with engine.connect() as conn:
        assert conn.execute(select(outbox_items)).all() == []


def test_done_job_enqueues_objects_in_outbox(settings: Settings, engine: Engine) -> None:
    analyser = FakeAnalyser()
    job = _job(engine)
    assert process_job(_ctx(settings, engine, analyser), job) == jq.DONE
    assert _state(engine, job) == ("done", None, 1)
    # Paths in instance-number order, inside the spool.
    assert [p.parent.name for p in analyser.seen] == [job.series_uid] * 3
    with engine.connect() as conn:
        items = conn.execute(select(outbox_items)).all()
    assert [(i.destination, i.state) for i in items] == [("pacs", "pending")]


def test_failing_analysis_is_retried_then_failed(settings: Settings, engine: Engine) -> None:
    job = _job(engine)
    ctx = _ctx(settings, engine, FakeAnalyser(fail=True))
    assert process_job(ctx, job) == jq.QUEUED
    again = jq.claim_next(engine, "test", 60)
    assert again is not None and again.attempts == 2
    assert process_job(ctx, again) == jq.FAILED
    state, error, _ = _state(engine, job)
    assert state == "failed" and error is not None and error.startswith("RuntimeError in ")
    assert "exploded" not in error  # the message is not recorded (it may quote patient data)


class ReportingAnalyser(FakeAnalyser):
    """Ends with a refusal (the real analysers say why: tilt, duplicate positions, no spine)."""

    def analyse(self, paths: Sequence[Path]) -> AnalysisOutput:
        return AnalysisOutput(AnalysisResult(
            "not_analysable", "gantry tilt 12.0 deg > 1 deg: tilted stacks are not resampled",
            "CT", "1.2.3", "4.5", None, None))


def test_not_analysable_series_is_a_state_with_its_reason(settings: Settings,
                                                          engine: Engine) -> None:
    """Issue 16 (8): a refusal used to end as 'done' with no error and 0 objects."""
    job = _job(engine)
    assert process_job(_ctx(settings, engine, ReportingAnalyser()), job) == jq.NOT_ANALYSABLE
    state, error, objects = _state(engine, job)
    assert state == "not_analysable" and objects == 1
    assert error == "gantry tilt 12.0 deg > 1 deg: tilted stacks are not resampled"
    with engine.connect() as conn:
        assert jq.state_counts(conn)["not_analysable"] == 1


class LeakyAnalyser(FakeAnalyser):
    """Fails like pydicom/highdicom do on a non-standard header value: the message quotes it."""

    def analyse(self, paths: Sequence[Path]) -> AnalysisOutput:
        raise ValueError("Invalid value for VR DA: '1951-03-09' (PatientName 'Canary^Phi')")


def test_failure_messages_quoting_header_values_reach_no_record_or_log(
        settings: Settings, engine: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 16 (2): the exception type and place are recorded, never its text."""
    job = _job(engine)
    ctx = _ctx(settings, engine, LeakyAnalyser())
    process_job(ctx, job)
    again = jq.claim_next(engine, "test", 60)
    assert again is not None
    process_job(ctx, again)
    state, error, _ = _state(engine, job)
    assert state == "failed" and error is not None and error.startswith("ValueError in ")
    out = capsys.readouterr()
    assert "analysis failed" in out.out + out.err  # the log is captured (not a vacuous check)
    for secret in ("1951-03-09", "Canary"):
        assert secret not in error
        assert secret not in out.out + out.err


def test_lookup_uses_explicit_overrides_then_registry(tmp_path: Path) -> None:
    s = settings_from_mapping({"dicom": {"allowed_callers": ["X"]},
                               "analysers": {"CR": "tests.node.fake_analysers:recording"}},
                              tmp_path)
    lookup = lookup_from_settings(s)
    found = lookup("cr")
    assert found is not None and found.name == "test-recording"
    assert lookup("CR") is found  # one instance per worker process
    assert lookup("SEG") is None  # nothing registered for SEG


def test_default_publisher_is_the_exporters() -> None:
    assert resolve_publisher(Settings().publisher) is exporters_publisher
    out = AnalysisOutput(AnalysisResult("not_analysable", "too few slices", "CT", None, None,
                                        None, None))
    assert exporters_publisher(out, "k", Settings().results) == []  # nothing for a non-result


def test_job_whose_worker_keeps_dying_ends_failed(settings: Settings, engine: Engine) -> None:
    """A job re-claimed after lease expiry more often than max_job_attempts (each worker died
    during it) fails instead of killing workers forever."""
    job = _job(engine)
    t = time.time()
    while job.attempts <= settings.queue.max_job_attempts:
        t += 61  # the previous worker's 60 s lease expired: it died
        again = jq.claim_next(engine, "test", 60, now=t)
        assert again is not None and again.id == job.id
        job = again
    analyser = FakeAnalyser()
    assert process_job(_ctx(settings, engine, analyser), job) == jq.FAILED
    state, error, _ = _state(engine, job)
    assert state == "failed" and "stopped during this job" in str(error)
    assert analyser.seen == []  # not analysed again


def test_result_uids_depend_on_the_content_not_only_the_series() -> None:
    """Issue 16 (5): the key the result UIDs derive from is stable for a re-run of the same
    job, and differs when the instances, the model or the job differ (a second node or a
    rebuilt database must not produce other objects under the same SOP Instance UID)."""

    import numpy as np

    from osteo_node.pipeline.results import ModelInfo
    from osteo_node.pipeline.types import Geometry, SourceInstance, Volume
    from osteo_node.worker.publish import content_key

    def output(uids: list[str], sha: str) -> AnalysisOutput:
        vol = Volume(np.zeros((len(uids), 2, 2), np.float32), Geometry((0, 0, 0), (1, 1, 1)),
                     "CT", sources=[SourceInstance(CTImageStorage, u) for u in uids])
        result = AnalysisResult("analysed", None, "CT", "1.2", "1.2.3", None,
                                ModelInfo("m", "1", sha, "CPUExecutionProvider"))
        return AnalysisOutput(result, vol)

    base = output(["1.1", "1.2", "1.3"], "a" * 64)
    key = content_key("1.2.3/g1", base)
    assert key == content_key("1.2.3/g1", output(["1.3", "1.1", "1.2"], "a" * 64))  # re-run
    assert key.startswith("1.2.3/g1/")
    assert key != content_key("1.2.3/g1", output(["1.1", "1.2"], "a" * 64))  # other instances
    assert key != content_key("1.2.3/g1", output(["1.1", "1.2", "1.3"], "b" * 64))  # model
    assert key != content_key("1.2.3/g2", base)  # generation
