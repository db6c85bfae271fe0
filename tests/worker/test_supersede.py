"""A later generation of a series supersedes the earlier results (issue 16, 4).

Before: a partial series analysed after ``series_quiet_seconds`` and its completion each sent
an SR/SEG/SC set with nothing relating them: PACS showed two reports for one series."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import pytest
from pydicom import Dataset, dcmread
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from sqlalchemy import Engine, select

from osteo_node.config.settings import Settings
from osteo_node.outbox.tables import outbox_items, outbox_objects
from osteo_node.pipeline.results import AnalysisOutput, AnalysisResult
from osteo_node.queue import jobs as jq
from osteo_node.store.db import make_engine
from osteo_node.store.index import InstanceRecord, record_instance
from osteo_node.worker.runner import WorkerContext, process_job
from osteo_node.worker.supersede import prior_objects, supersede
from tests.worker.support import destination, worker_settings

STUDY, SERIES = "1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.2"
SR_CLASS, SC_CLASS = "1.2.840.10008.5.1.4.1.1.88.34", "1.2.840.10008.5.1.4.1.1.7"


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return worker_settings(tmp_path, db_url, [
        destination("pacs", "PACS", 104, ["sr", "sc"]),
        destination("viewer", "VIEWER", 105, ["sc"]),
        destination("archive", "ARCH", 106, ["seg"]),
    ], results={"worklist": False})


@pytest.fixture
def engine(settings: Settings) -> Engine:
    return make_engine(settings.storage.database_url)


def _receive(engine: Engine, n: int) -> jq.ClaimedJob:
    """``n`` more instances of the series arrive, the series goes quiet, a job is claimed."""
    with engine.begin() as conn:
        for _ in range(n):
            sop = generate_uid()
            record_instance(conn, InstanceRecord(STUDY, SERIES, sop, CTImageStorage,
                                                 ExplicitVRLittleEndian, "CT", 1,
                                                 f"{STUDY}/{SERIES}/{sop}.dcm", 1), 100.0)
    jq.queue_complete_series(engine, 1, now=10_000.0)
    job = jq.claim_next(engine, "test", 60)
    assert job is not None
    return job


def _object(sop_class: str, key: str, kind: str) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid(entropy_srcs=[key, kind])
    ds.StudyInstanceUID, ds.SeriesInstanceUID = STUDY, generate_uid(entropy_srcs=[key, kind, "s"])
    ds.Modality = "SR" if kind == "sr" else "OT"
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Canary^Phi", "P1", "", "F"
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber = "20260101", "120000", "A1"
    ds.ReferringPhysicianName, ds.StudyID = "", "1"
    return ds


class Analyser:
    name = "fake"

    def __init__(self, status: Literal["analysed", "not_analysable"] = "analysed") -> None:
        self.status = status

    def analyse(self, paths: Sequence[Path]) -> AnalysisOutput:
        return AnalysisOutput(AnalysisResult(self.status, None, "CT", STUDY, SERIES, None, None))


def _publish(out: AnalysisOutput, key: str, _s: object) -> list[tuple[str, Dataset]]:
    if out.result.status != "analysed":
        return []
    return [("sr", _object(SR_CLASS, key, "sr")), ("sc", _object(SC_CLASS, key, "sc"))]


def _ctx(settings: Settings, engine: Engine,
         status: Literal["analysed", "not_analysable"] = "analysed") -> WorkerContext:
    return WorkerContext(settings, engine, lambda _m: Analyser(status), _publish, "test")


def _objects(engine: Engine, job_id: int | str) -> dict[str, str]:
    with engine.connect() as conn:
        rows = conn.execute(select(outbox_objects.c.kind, outbox_objects.c.sop_instance_uid)
                            .where(outbox_objects.c.job_id == str(job_id))).all()
    return {r.kind: r.sop_instance_uid for r in rows}


def _file(settings: Settings, engine: Engine, uid: str) -> Dataset:
    with engine.connect() as conn:
        rel = conn.execute(select(outbox_objects.c.rel_path)
                           .where(outbox_objects.c.sop_instance_uid == uid)).scalar_one()
    return dcmread(settings.storage.outbox_dir / rel)


def _destinations(engine: Engine, uid: str) -> list[str]:
    with engine.connect() as conn:
        return sorted(conn.execute(select(outbox_items.c.destination)
                                   .where(outbox_items.c.sop_instance_uid == uid)).scalars())


def _rejected(note: Dataset) -> set[str]:
    return {str(item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
            for item in note.ContentSequence if "ReferencedSOPSequence" in item}


def test_second_generation_supersedes_the_first(settings: Settings, engine: Engine) -> None:
    ctx = _ctx(settings, engine)
    first = _receive(engine, 3)  # the interrupted transfer
    assert process_job(ctx, first) == jq.DONE
    old = _objects(engine, first.id)
    assert set(old) == {"sr", "sc"}
    assert "PredecessorDocumentsSequence" not in _file(settings, engine, old["sr"])

    second = _receive(engine, 2)  # the rest of the series
    assert second.generation == 2
    assert process_job(ctx, second) == jq.DONE
    new = _objects(engine, second.id)
    sr = _file(settings, engine, new["sr"])
    pred = sr.PredecessorDocumentsSequence[0]
    assert pred.StudyInstanceUID == STUDY
    ref = pred.ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert (ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID) == (SR_CLASS, old["sr"])

    notes = _objects(engine, f"{second.id}/rejection")
    note = _file(settings, engine, notes["kos"])
    title = note.ConceptNameCodeSequence[0]
    assert (title.CodeValue, title.CodingSchemeDesignator) == ("113001", "DCM")
    assert _rejected(note) == {old["sr"], old["sc"]}
    assert note.StudyInstanceUID == STUDY and note.PatientID == "P1"
    # the note goes where the rejected objects went: the viewer (SC only) gets it too, the
    # archive (SEG only, none made) does not
    assert _destinations(engine, notes["kos"]) == ["pacs", "viewer"]
    with engine.connect() as conn:
        (objects,) = conn.execute(select(jq.jobs.c.objects)
                                  .where(jq.jobs.c.id == second.id)).one()
    assert objects == 3  # SR, SC and the note

    # a re-run of the same job (same key) makes a note under the same UID (the outbox sends
    # it once)
    priors = prior_objects(engine, second)
    key = "k/g2/abc"
    again = [supersede(_publish(Analyser().analyse([]), key, None), priors, key)[1]
             for _ in range(2)]
    assert again[0] is not None and again[1] is not None
    assert again[0].SOPInstanceUID == again[1].SOPInstanceUID


def test_unanalysable_generation_keeps_the_earlier_results(settings: Settings,
                                                          engine: Engine) -> None:
    first = _receive(engine, 3)
    process_job(_ctx(settings, engine), first)
    old = _objects(engine, first.id)
    second = _receive(engine, 1)
    assert process_job(_ctx(settings, engine, "not_analysable"), second) == jq.NOT_ANALYSABLE
    assert _objects(engine, f"{second.id}/rejection") == {}  # nothing replaces them
    # the third generation supersedes the newest results there are: the first's
    third = _receive(engine, 1)
    process_job(_ctx(settings, engine), third)
    note = _file(settings, engine, _objects(engine, f"{third.id}/rejection")["kos"])
    assert _rejected(note) == {old["sr"], old["sc"]}
    sr = _file(settings, engine, _objects(engine, third.id)["sr"])
    assert sr.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0] \
        .ReferencedSOPSequence[0].ReferencedSOPInstanceUID == old["sr"]
    # and a fourth rejects the third's only, never a rejection note
    fourth = _receive(engine, 1)
    process_job(_ctx(settings, engine), fourth)
    note4 = _file(settings, engine, _objects(engine, f"{fourth.id}/rejection")["kos"])
    assert _rejected(note4) == set(_objects(engine, third.id).values())
