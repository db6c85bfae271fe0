"""Test-only analysers and publisher, injected through the ``analysers``/``publisher`` settings.

They are fakes of what the node tests are not about (the analysis itself); they record what
happened in marker files under ``$OSTEO_TEST_ANALYSER_DIR`` so a test in another process can
check how often an analysis started and finished.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from pydicom import dcmread

from osteo_node.pipeline.results import AnalysisOutput, AnalysisResult


def _dir() -> Path:
    return Path(os.environ["OSTEO_TEST_ANALYSER_DIR"])


class RecordingAnalyser:
    """Counts instances and finishes at once (or, blocking, after a ``release`` file appears)."""

    name = "test-recording"
    blocking = False

    def analyse(self, paths: Sequence[Path]) -> AnalysisOutput:
        d = _dir()
        head = dcmread(paths[0], stop_before_pixels=True)
        tag = f"{head.SeriesInstanceUID}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        (d / f"started-{tag}").write_text(str(len(paths)))
        while self.blocking and not (d / "release").exists():
            time.sleep(0.05)
        (d / f"finished-{tag}").write_text(str(len(paths)))
        return AnalysisOutput(result=AnalysisResult(
            status="not_analysable", reason=f"test analyser saw {len(paths)} instances",
            modality=str(head.Modality), study_instance_uid=str(head.StudyInstanceUID),
            series_instance_uid=str(head.SeriesInstanceUID), contrast_phase=None, model=None))


class BlockingAnalyser(RecordingAnalyser):
    name = "test-blocking"
    blocking = True


def recording() -> RecordingAnalyser:
    return RecordingAnalyser()


def blocking() -> BlockingAnalyser:
    return BlockingAnalyser()


def no_objects(output: AnalysisOutput, job_key: str,
               _settings: object = None) -> list[tuple[str, object]]:
    return []


def secondary_capture(output: AnalysisOutput, job_key: str,
                      _settings: object = None) -> list[tuple[str, object]]:
    """One small Secondary Capture in the analysed study, UIDs derived from the job key (a
    re-run yields the same object)."""
    import numpy as np
    from pydicom.dataset import Dataset
    from pydicom.uid import generate_uid

    r = output.result
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = generate_uid(entropy_srcs=[job_key, "sop"])
    ds.StudyInstanceUID = r.study_instance_uid
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[job_key, "series"])
    ds.Modality, ds.ConversionType, ds.SeriesNumber, ds.InstanceNumber = "OT", "WSD", 999, 1
    ds.Rows = ds.Columns = 8
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = np.arange(64, dtype=np.uint8).tobytes()
    return [("sc", ds)]


def _leak(paths: Sequence[Path]) -> str:
    """What a pydicom / highdicom error on a non-standard header looks like: it quotes the
    values (patient data)."""
    head = dcmread(paths[0], stop_before_pixels=True)
    return (f"Invalid value for VR DA: '{head.get('PatientBirthDate', '')}' "
            f"(PatientName '{head.get('PatientName', '')}', "
            f"PatientID '{head.get('PatientID', '')}', "
            f"AccessionNumber '{head.get('AccessionNumber', '')}')")


class LeakyAnalyser:
    """Fails the way a header-value error does: its message quotes patient data."""

    name = "test-leaky"

    def analyse(self, paths: Sequence[Path]) -> AnalysisOutput:
        raise ValueError(_leak(paths))


def leaky() -> LeakyAnalyser:
    return LeakyAnalyser()


def leaky_publisher(output: AnalysisOutput, job_key: str,
                    _settings: object = None) -> list[tuple[str, object]]:
    """Fails in the export stage with patient data in the message."""
    raise ValueError(f"Unable to convert value of PatientName for series "
                     f"{output.result.series_instance_uid}: {os.environ.get('OSTEO_TEST_LEAK')}")
