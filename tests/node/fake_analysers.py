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


def no_objects(output: AnalysisOutput, job_key: str) -> list[tuple[str, object]]:
    return []
