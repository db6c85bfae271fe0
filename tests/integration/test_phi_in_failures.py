"""Issue 16 (2): no patient data in logs, job records, the database or ``status`` after
failures in every stage.

A crafted series carries unmistakable patient values (an ISO birth date, as real data often
has, a name, an ID, an accession number). The node, as a real process fed by dcmtk storescu,
meets a failure in each stage: the store (an instance without Modality, a truncated file), the
analysis (an analyser whose exception quotes the header, like pydicom's "Invalid value for VR
DA" does) and the export (a publisher whose exception quotes the name). Then every value is
grepped for in the node log, the SQLite database files and ``osteo-node status`` (text and
JSON). The failing analyser and publisher are test fakes: what is tested is the node's handling
of their errors."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import MRImageStorage
from sqlalchemy import select

from osteo_node.queue.jobs import jobs
from osteo_node.store.db import make_engine
from tests.node.support import (
    REPO,
    NodeProcess,
    free_port,
    node_config,
    storescu,
    synth_series,
    wait_until,
    write_config,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk not installed"),
]

SECRETS = {"PatientName": "Zebedee^Canaryfield", "PatientID": "MRN-CANARY-4471",
           "PatientBirthDate": "1951-03-09", "AccessionNumber": "ACC-CANARY-88"}


def _crafted(files: list[Path], modality: str | None = None) -> list[Path]:
    for f in files:
        ds = dcmread(f)
        for kw, value in SECRETS.items():
            setattr(ds, kw, value)
        if modality == "MR":
            ds.Modality, ds.SOPClassUID = "MR", MRImageStorage
            ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
        ds.save_as(f, enforce_file_format=True)
    return files


def test_no_patient_value_reaches_log_database_or_status(tmp_path: Path,
                                                          shared_data: Path) -> None:
    src = sorted((shared_data / "ct/chest_ct_series/dicom").glob("*.dcm"))[:12]
    ct = _crafted(synth_series(src, tmp_path / "ct", 12))
    mr = _crafted(synth_series(src, tmp_path / "mr", 12), modality="MR")
    # store-stage failures: no Modality (0xA900); a truncated file (storescu itself refuses to
    # send it, so it only checks that the node loses nothing else)
    no_modality = _crafted(synth_series(src, tmp_path / "bad", 2))
    ds = dcmread(no_modality[0])
    del ds.Modality
    ds.save_as(no_modality[0], enforce_file_format=True)
    truncated = no_modality[1].read_bytes()
    no_modality[1].write_bytes(truncated[: len(truncated) * 2 // 3])

    port = free_port()
    node_dir = tmp_path / "node"
    node_dir.mkdir()
    cfg = node_config(node_dir, port,
                      analysers={"CT": "tests.node.fake_analysers:leaky",
                                 "MR": "tests.node.fake_analysers:recording"},
                      publisher="tests.node.fake_analysers:leaky_publisher",
                      queue={"max_job_attempts": 2})
    config = write_config(node_dir, cfg)
    markers = tmp_path / "markers"
    markers.mkdir()
    node = NodeProcess(config, tmp_path / "node.log",
                       env={"OSTEO_TEST_ANALYSER_DIR": str(markers),
                            "OSTEO_TEST_LEAK": SECRETS["PatientName"]}).start(port)
    engine = make_engine(f"sqlite:///{node_dir / 'node.db'}")
    try:
        assert len(storescu(port, ct).acknowledged) == len(ct)
        assert len(storescu(port, mr).acknowledged) == len(mr)
        bad = storescu(port, no_modality)
        assert bad.acknowledged == []  # both refused, with a reason on the wire

        def failed() -> list[str] | None:
            with engine.connect() as conn:
                rows = conn.execute(select(jobs.c.state, jobs.c.last_error)).all()
            done = [r for r in rows if r.state == "failed"]
            return [str(r.last_error) for r in done] if len(done) == 2 else None

        errors = wait_until(failed, 120, interval=0.2, what="both jobs failed")
        assert all(" in " in e for e in errors), errors  # type and place are recorded
        status = [subprocess.run(
            [sys.executable, "-m", "osteo_node", "status", "--config", str(config), *fmt],
            cwd=REPO, capture_output=True, text=True, timeout=120, check=True).stdout
            for fmt in ((), ("--json",))]
    finally:
        assert node.stop() == 0
    log = (tmp_path / "node.log").read_text(errors="replace")
    assert "analysis failed" in log and "ValueError" in log  # the failures were logged
    assert "DataSetDoesNotMatchSOPClass" in bad.output  # 0xA900 on the wire
    assert "Modality" in log  # and the reason in the log
    assert all("failed" in s for s in status)
    database = b"".join(p.read_bytes() for p in node_dir.glob("node.db*"))
    for kw, value in SECRETS.items():
        for part in {value, *value.split("^")}:
            assert part not in log, (kw, "log")
            assert all(part not in s for s in status), (kw, "status")
            assert part.encode() not in database, (kw, "database")
            assert all(part not in e for e in errors), (kw, "job record")
