"""The outbox delivers the exporters' real SR, SEG, SC and KOS (built from the 20 real CT slices
with the reference vertebra labels) into the ORIGINAL study in a real Orthanc, exactly once;
a re-export of the same job gives the same SOP Instance UIDs and sends nothing again. The
sender's log holds UIDs, never the patient's name or ID."""

from __future__ import annotations

import io
import logging
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from sqlalchemy import Engine

from osteo_node.exporters.publish import build_objects
from osteo_node.logging_setup import configure
from osteo_node.outbox import store
from osteo_node.outbox.policy import RetryPolicy
from osteo_node.outbox.sender import OutboxSender, SenderSettings, Timeouts
from osteo_node.pipeline.results import AnalysisOutput
from osteo_node.store.db import make_engine
from osteo_node.store.schema import upgrade
from tests.exporters.conftest import (  # noqa: F401  (fixtures)
    PATIENT_ID,
    PATIENT_NAME,
    STUDY_UID,
    ct20_files,
    ct20_output,
)
from tests.integration.orthanc import OrthancServer, orthanc_fixture  # noqa: F401

pytestmark = [pytest.mark.integration, pytest.mark.shared_data]


@pytest.fixture(autouse=True)
def _fresh_structlog() -> Iterator[None]:
    """A CLI test run earlier in the session may have pointed structlog at its (now closed)
    captured stderr: start from structlog's defaults."""
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    eng = make_engine(f"sqlite:///{tmp_path / 'node.db'}")
    upgrade(eng)
    return eng


def test_exporter_objects_reach_orthanc_in_the_original_study_once(
    orthanc: OrthancServer,
    engine: Engine,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    # The exporters' fixtures (imported above), fetched by name to keep the names distinct.
    ct_files: list[Path] = request.getfixturevalue("ct20_files")
    output: AnalysisOutput = request.getfixturevalue("ct20_output")
    if shutil.which("storescu") is None:
        pytest.skip("dcmtk storescu not installed")
    res = subprocess.run(
        ["storescu", "-R", "-xv", "-aec", orthanc.aet, orthanc.host, str(orthanc.dicom_port),
         *map(str, ct_files)],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr  # the source CT is in the PACS
    objs = build_objects(output, uid_root=None, job_key="outbox-ct20")
    assert sorted(o.kind for o in objs) == ["kos", "sc", "seg", "sr"]
    outbox = tmp_path / "outbox"
    pacs = orthanc.destination("pacs")
    for o in objs:
        store.enqueue(engine, outbox, [o.dataset], [pacs], job_id=1, kind=o.kind)

    log = io.StringIO()
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, logging.getLogger("pynetdicom").level)
    configure("INFO", json=True, stream=log)
    try:
        report = OutboxSender(
            engine, outbox, [pacs], RetryPolicy(),
            settings=SenderSettings(timeouts=Timeouts(dimse=60, network=60)),
        ).run_once()
    finally:
        structlog.reset_defaults()
        root.handlers[:], root.level = saved[0], saved[1]
        logging.getLogger("pynetdicom").setLevel(saved[2])
    assert (report.sent, report.failed, report.retrying, report.associations) == (4, 0, 0, 1)

    (study,) = orthanc.studies()
    assert orthanc.study_uid(study) == STUDY_UID
    by_modality = {
        s["MainDicomTags"].get("Modality"): len(s["Instances"]) for s in orthanc.series_of(study)
    }
    assert by_modality == {"CT": len(ct_files), "SR": 1, "SEG": 1, "OT": 1, "KO": 1}
    result_uids = sorted(o.sop_instance_uid for o in objs)
    received = orthanc.received_sop_uids()
    assert sorted(u for u in received if u in set(result_uids)) == result_uids  # once each
    seg = orthanc.fetch_instance(orthanc.lookup(objs[0].sop_instance_uid)[0]["ID"])
    assert seg.SOPInstanceUID == objs[0].sop_instance_uid

    text = log.getvalue()
    assert all(u in text for u in result_uids)
    assert PATIENT_NAME not in text and PATIENT_NAME.split("^")[0] not in text
    assert PATIENT_ID not in text

    # Re-export of the same job: same UIDs, nothing new queued, nothing re-sent.
    again = build_objects(output, uid_root=None, job_key="outbox-ct20")
    assert sorted(o.sop_instance_uid for o in again) == result_uids
    for o in again:
        (r,) = store.enqueue(engine, outbox, [o.dataset], [pacs], job_id=1, kind=o.kind)
        assert r.new_destinations == ()
    assert OutboxSender(engine, outbox, [pacs], RetryPolicy()).run_once().claimed == 0
    assert orthanc.instance_count() == len(ct_files) + 4
