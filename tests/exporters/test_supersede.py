"""The objects that supersede an earlier generation's results: the SR's Predecessor Documents
Sequence and the IOCM rejection note, built from real exporter output and dciodvfy-clean."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import pytest
from pydicom import dcmread

from osteo_node.exporters.common import ExportError
from osteo_node.exporters.publish import ExportedObject, build_objects, write_objects
from osteo_node.exporters.supersede import PriorObject, RejectionNote, with_predecessors
from osteo_node.exporters.uids import UidFactory
from osteo_node.pipeline.results import AnalysisOutput


def _priors(objects: list[ExportedObject]) -> list[PriorObject]:
    return [PriorObject(o.kind, o.sop_class_uid, o.sop_instance_uid,
                        str(o.dataset.StudyInstanceUID), str(o.dataset.SeriesInstanceUID))
            for o in objects]


def _dciodvfy_errors(path: Path) -> list[str]:
    exe = shutil.which("dciodvfy")
    if exe is None:
        pytest.skip("dicom3tools dciodvfy not installed")
    proc = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=120,
                          check=False)
    return [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith("Error")]


def test_new_sr_names_the_old_one_and_the_note_rejects_all_old_objects(
        ct20_output: AnalysisOutput, tmp_path: Path) -> None:
    old = build_objects(ct20_output, uid_root=None, job_key="s/g1/aaa")
    new = build_objects(ct20_output, uid_root=None, job_key="s/g2/bbb")
    priors = _priors(old)
    assert {p.kind for p in priors} >= {"sr", "seg", "sc"}
    sr = with_predecessors(next(o.dataset for o in new if o.kind == "sr"), priors)
    old_sr = next(o for o in old if o.kind == "sr")
    ref = sr.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence
    assert [r.ReferencedSOPInstanceUID for r in ref] == [old_sr.sop_instance_uid]

    note = RejectionNote(sr, priors, UidFactory("s/g2/bbb")).build()
    round_trip = hd.ko.KeyObjectSelectionDocument.from_dataset(note)
    got = {str(r.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
           for r in round_trip.content.get_references()}
    assert got == {p.sop_instance_uid for p in priors}
    assert note.ConceptNameCodeSequence[0].CodeValue == "113001"
    assert note.PatientID == sr.PatientID and note.StudyInstanceUID == sr.StudyInstanceUID
    assert note.SeriesInstanceUID not in {p.series_instance_uid for p in priors}

    paths = write_objects([ExportedObject("sr", sr), ExportedObject("kos", note)], tmp_path)
    for path in paths:
        assert dcmread(path).SOPInstanceUID
        errors = _dciodvfy_errors(path)
        assert not errors, (path.name, errors)


def test_rejection_note_refuses_nothing_or_another_study(ct20_output: AnalysisOutput) -> None:
    old = build_objects(ct20_output, uid_root=None, job_key="s/g1/aaa")
    sr = next(o.dataset for o in old if o.kind == "sr")
    with pytest.raises(ExportError, match="at least one"):
        RejectionNote(sr, [], UidFactory("k"))
    other = PriorObject("sr", str(sr.SOPClassUID), "1.2.3.4", "9.9.9", "9.9.9.1")
    with pytest.raises(ExportError, match="own study"):
        RejectionNote(sr, [other], UidFactory("k"))
    # an SR of another study is not named as a predecessor either
    assert "PredecessorDocumentsSequence" not in with_predecessors(sr, [other])
