"""The SEG labels an uncertain level name the way the SC and SR show it.

Real images and reference labels (``ct20_output``: the 20 real CT slices; the result is the
exporters' fixture) with the level confidences pipeline/ct/levels.py gives with no anatomical
anchor (CONF_GUESS_RIBS) and with sacrum and last rib agreeing (CONF_AGREE); whether a name is
uncertain is decided by THE rule (grade.level_uncertain) as in the analyser. The SEG is built by
``publish.build_objects`` (what the node sends), checked with dciodvfy and read back with
highdicom.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import highdicom as hd
import pydicom
import pytest

from osteo_node.exporters.common import LEVEL_CAVEAT
from osteo_node.exporters.publish import build_objects, write_objects
from osteo_node.exporters.seg import segment_levels
from osteo_node.pipeline.ct import level_names as lv
from osteo_node.pipeline.results import AnalysisOutput
from osteo_node.pipeline.types import LabelVolume
from tests.exporters.test_level_uncertain import _dciodvfy_errors, with_level_confidence


def _seg(output: AnalysisOutput, tmp: Path, key: str) -> tuple[pydicom.Dataset, Path]:
    objs = [o for o in build_objects(output, uid_root=None, job_key=key) if o.kind == "seg"]
    assert len(objs) == 1
    (path,) = write_objects(objs, tmp)
    return pydicom.dcmread(path), path


def _segments(seg: pydicom.Dataset) -> dict[str, tuple[str, str | None, str]]:
    """tracking id -> (Segment Label, Segment Description or None, level from the code)."""
    by_code = segment_levels(seg)
    return {
        str(item.TrackingID): (str(item.SegmentLabel), item.get("SegmentDescription"),
                               by_code[int(item.SegmentNumber)])
        for item in seg.SegmentSequence
    }


@pytest.mark.shared_data
def test_seg_labels_uncertain_levels(ct20_output: AnalysisOutput, tmp_path: Path) -> None:
    guessed = with_level_confidence(ct20_output, lv.CONF_GUESS_RIBS)
    seg, path = _seg(guessed, tmp_path / "g", "seg-level-guessed")
    assert not _dciodvfy_errors(path)
    caveat = lambda shown: f"{shown} (level uncertain). {LEVEL_CAVEAT}"  # noqa: E731
    # label and description carry the uncertainty; code and tracking id keep the level
    assert _segments(seg) == {"T11": ("T11?", caveat("T11?"), "T11"),
                              "T12": ("T12?", caveat("T12?"), "T12")}

    # highdicom reads the SEG back with the same labels and descriptions
    back = hd.seg.Segmentation.from_dataset(seg, copy=True)
    descs = {d.tracking_id: d for d in (back.get_segment_description(n)
                                        for n in back.segment_numbers)}
    assert {t: d.segment_label for t, d in descs.items()} == {"T11": "T11?", "T12": "T12?"}
    assert all(LEVEL_CAVEAT in str(d.SegmentDescription) for d in descs.values())

    anchored = with_level_confidence(ct20_output, lv.CONF_AGREE)
    seg, path = _seg(anchored, tmp_path / "a", "seg-level-anchored")
    assert not _dciodvfy_errors(path)
    assert _segments(seg) == {"T11": ("T11", None, "T11"), "T12": ("T12", None, "T12")}


@pytest.mark.shared_data
def test_seg_label_the_result_does_not_report(ct20_output: AnalysisOutput,
                                             tmp_path: Path) -> None:
    """A labelled vertebra outside the result (e.g. outside T4-L5): the same rule on the
    label's confidence, as the SC overlay does."""
    guessed = with_level_confidence(ct20_output, lv.CONF_GUESS_RIBS)
    result = dataclasses.replace(
        guessed.result, vertebrae=[v for v in guessed.result.vertebrae if v.level == "T12"])
    assert ct20_output.labels is not None
    for confidence, shown in ((lv.CONF_GUESS_RIBS, "T11?"), (lv.CONF_AGREE, "T11")):
        labels = LabelVolume(ct20_output.labels.array, ct20_output.labels.geometry,
                             ct20_output.labels.levels,
                             {"T11": confidence, "T12": lv.CONF_GUESS_RIBS})
        output = AnalysisOutput(result, ct20_output.volume, labels)
        seg, _ = _seg(output, tmp_path / shown, f"seg-unreported-{shown}")
        assert _segments(seg)["T11"][0] == shown
        assert _segments(seg)["T12"][0] == "T12?"


@pytest.mark.shared_data
def test_seg_labels_plain_when_not_assessed(ct20_output: AnalysisOutput, tmp_path: Path) -> None:
    """level_uncertain None (an analyser that does not decide it): plain names, no caveat."""
    assert all(v.level_uncertain is None for v in ct20_output.result.vertebrae)
    seg, _ = _seg(ct20_output, tmp_path, "seg-not-assessed")
    assert _segments(seg) == {"T11": ("T11", None, "T11"), "T12": ("T12", None, "T12")}
