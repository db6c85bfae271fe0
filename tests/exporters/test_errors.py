"""Bad input to the exporters gets a clear ExportError (never a half-built object)."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest

from osteo_node.exporters.common import ExportError, ExportSettings
from osteo_node.exporters.publish import build_objects
from osteo_node.exporters.sc import SagittalSecondaryCapture
from osteo_node.exporters.seg import VertebraSegmentation
from osteo_node.exporters.uids import UidFactory
from osteo_node.pipeline.results import AnalysisOutput
from osteo_node.pipeline.types import LabelVolume

pytestmark = pytest.mark.shared_data


def _settings() -> ExportSettings:
    return ExportSettings(uids=UidFactory("errors"))


def test_nifti_input_is_refused(ct20_output: AnalysisOutput) -> None:
    assert ct20_output.volume is not None
    nifti_like = dataclasses.replace(ct20_output.volume, header=None, sources=[])
    with pytest.raises(ExportError, match="NIfTI"):
        build_objects(AnalysisOutput(ct20_output.result, nifti_like, ct20_output.labels),
                      uid_root=None, job_key="x")


def test_missing_sources_refused(ct20_output: AnalysisOutput) -> None:
    assert ct20_output.volume is not None
    vol = dataclasses.replace(ct20_output.volume, sources=ct20_output.volume.sources[:-1])
    with pytest.raises(ExportError, match="source instances"):
        build_objects(AnalysisOutput(ct20_output.result, vol, ct20_output.labels),
                      uid_root=None, job_key="x")


def test_label_grid_mismatch_refused(ct20_output: AnalysisOutput) -> None:
    assert ct20_output.volume is not None and ct20_output.labels is not None
    small = LabelVolume(ct20_output.labels.array[:, :100], ct20_output.labels.geometry,
                        dict(ct20_output.labels.levels))
    with pytest.raises(ExportError, match="shape"):
        VertebraSegmentation(ct20_output.volume, small, _settings(), "a", "1")
    empty = LabelVolume(np.zeros_like(ct20_output.labels.array), ct20_output.labels.geometry,
                        dict(ct20_output.labels.levels))
    with pytest.raises(ExportError, match="no labelled vertebra"):
        VertebraSegmentation(ct20_output.volume, empty, _settings(), "a", "1")


def test_sc_needs_rgb_uint8(ct20_output: AnalysisOutput) -> None:
    assert ct20_output.volume is not None
    with pytest.raises(ExportError, match="RGB uint8"):
        SagittalSecondaryCapture(np.zeros((64, 64), np.uint8), ct20_output.volume, _settings())
    with pytest.raises(ExportError, match="RGB uint8"):
        SagittalSecondaryCapture(np.zeros((64, 64, 3), np.float32), ct20_output.volume,
                                 _settings())


def test_unknown_kind_refused(ct20_output: AnalysisOutput) -> None:
    with pytest.raises(ValueError, match="unknown object kinds"):
        build_objects(ct20_output, uid_root=None, job_key="x", kinds=("sr", "pdf"))


def _with_header(output: AnalysisOutput, **values: str) -> AnalysisOutput:
    assert output.volume is not None
    header = copy.deepcopy(output.volume.header)  # the fixture is shared
    for keyword, value in values.items():
        setattr(header, keyword, value)
    return AnalysisOutput(output.result, dataclasses.replace(output.volume, header=header),
                          output.labels)


def test_iso_birth_date_does_not_stop_the_export(ct20_output: AnalysisOutput,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 16 (1): ``PatientBirthDate = '1951-03-09'`` (ISO, common in real data) made the
    SEG builder raise and the job lost every object. It is written as the DA it means, every
    object is built, and nothing logs the value."""
    output = _with_header(ct20_output, PatientBirthDate="1951-03-09", StudyTime="10:22:05",
                          PatientSex="unknown-and-far-too-long-for-CS")
    objects = build_objects(output, uid_root=None, job_key="iso-dates")
    assert sorted(o.kind for o in objects) == ["kos", "sc", "seg", "sr"]
    for o in objects:
        assert o.dataset.PatientBirthDate == "19510309"
        assert o.dataset.StudyTime == "102205"
        assert o.dataset.PatientSex == ""  # invalid for CS: dropped (type 2: empty)
    logged = capsys.readouterr()
    assert "export_header_value_normalised" in logged.out + logged.err
    assert "1951-03-09" not in logged.out + logged.err


def test_one_failing_object_keeps_the_others(ct20_output: AnalysisOutput,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 16 (1): a failure in one exporter (here the SC renderer, raising with a patient's
    name in its message) must not discard the others; the failure is logged without it."""
    from osteo_node.exporters.publish import BuildOptions

    def broken(*_a: object) -> np.ndarray:
        raise ValueError("cannot draw 'Canary^Phi'")

    objects = build_objects(ct20_output, uid_root=None, job_key="one-fails",
                            options=BuildOptions(render=broken))
    assert sorted(o.kind for o in objects) == ["kos", "seg", "sr"]
    logged = capsys.readouterr()
    assert "export_object_failed" in logged.out + logged.err
    assert "Canary" not in logged.out + logged.err
