"""The sagittal overlay does not present guessed level names as fact.

Real data: the example CT (sacrum to T12) with its reference vertebra labels, analysed by the
real CT analyser. The reference labels are injected as the segmentation (a fake for the model,
which this test is not about) once with the confidence of an anchored naming (sacrum and last
rib agree, levels.py CONF_AGREE) and once with the confidence levels.py gives when no anchor is
in view (CONF_GUESS_NONE: "levels are a guess"). The burned-in text is checked pixel for pixel.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from osteo_node.exporters.common import LEVEL_CAVEAT
from osteo_node.pipeline.ct.analyser import CTAnalyser, Segmentation
from osteo_node.pipeline.ct.evaluation import ReferenceSpec, reference_segment_fn
from osteo_node.pipeline.ct.level_names import CONF_AGREE, CONF_GUESS_NONE
from osteo_node.pipeline.results import AnalysisOutput
from osteo_node.pipeline.types import LabelVolume, Volume
from osteo_node.render.sagittal import CAVEAT_COLOUR, GRADE_COLOURS, render_sagittal_overlay
from tests.render.text_pixels import find_text

pytestmark = pytest.mark.shared_data

TS = "ct/totalseg_example"
PANEL_FONT, FOOTER_FONT = 15, 14


def _analyse(shared_data: Path, confidence: float) -> AnalysisOutput:
    spec = ReferenceSpec(shared_data / TS / "vertebrae_pp_refined.nii.gz", "verse",
                         shared_data / TS / "vertebrae_body.nii.gz", (1,))
    reference = reference_segment_fn(spec)

    def segment(volume: Volume) -> Segmentation:
        seg = reference(volume)
        lab = seg.labels
        seg.labels = LabelVolume(lab.array, lab.geometry, lab.levels,
                                 {k: confidence for k in lab.levels}, lab.notes)
        return seg

    out = CTAnalyser(segment=segment).analyse([shared_data / TS / "example_ct.nii.gz"])
    assert out.result.status == "analysed", out.result.reason
    return out


@pytest.fixture(scope="module")
def guessed(shared_data: Path) -> AnalysisOutput:
    return _analyse(shared_data, CONF_GUESS_NONE)


@pytest.fixture(scope="module")
def anchored(shared_data: Path) -> AnalysisOutput:
    return _analyse(shared_data, CONF_AGREE)


def _panel_line(out: AnalysisOutput, level: str, name: str) -> tuple[str, tuple[int, int, int]]:
    """The right-hand panel line of a level as the renderer lays it out, and its colour."""
    v = next(v for v in out.result.vertebrae if v.level == level)
    assert v.trabecular_hu is not None and v.genant_grade is not None
    morph = "" if v.morphology in ("normal", "indeterminate") else f" {v.morphology}"
    hu = f"{v.trabecular_hu.mean:.0f} HU"
    return f"{name:>4}  {hu:>7}  G{v.genant_grade}{morph}", GRADE_COLOURS[v.genant_grade]


def test_guessed_levels_drawn_with_question_mark_and_caveat(
        guessed: AnalysisOutput, anchored: AnalysisOutput, artifacts_dir: Path) -> None:
    assert guessed.volume is not None
    rgb = render_sagittal_overlay(guessed.volume, guessed.labels, guessed.result)
    Image.fromarray(rgb).save(artifacts_dir / "sagittal_example_ct_levels_guessed.png")
    assert all(v.level_uncertain for v in guessed.result.vertebrae)
    for level in ("L1", "L3"):
        text, colour = _panel_line(guessed, level, f"{level}?")
        assert len(find_text(rgb, text, PANEL_FONT, colour)) == 1, text
        plain, _ = _panel_line(guessed, level, level)
        assert not find_text(rgb, plain, PANEL_FONT, colour), plain
    # the amber caveat line in the footer, below the image
    hits = find_text(rgb, LEVEL_CAVEAT.split(":")[0], FOOTER_FONT, CAVEAT_COLOUR)
    assert len(hits) == 1 and hits[0][0] > rgb.shape[0] - 60, hits
    # the density summary in the footer names the level as uncertain
    f = guessed.result.findings
    assert f is not None and f.density_level == "L1" and f.l1_hu is not None
    assert find_text(rgb, f"L1? {f.l1_hu:.0f} HU", FOOTER_FONT, (255, 255, 255))


def test_anchored_levels_drawn_plain_without_caveat(anchored: AnalysisOutput,
                                                   artifacts_dir: Path) -> None:
    assert anchored.volume is not None
    rgb = render_sagittal_overlay(anchored.volume, anchored.labels, anchored.result)
    Image.fromarray(rgb).save(artifacts_dir / "sagittal_example_ct_levels_anchored.png")
    assert not any(v.level_uncertain for v in anchored.result.vertebrae)
    for level in ("L1", "L3"):
        text, colour = _panel_line(anchored, level, level)
        assert len(find_text(rgb, text, PANEL_FONT, colour)) == 1, text
        marked, _ = _panel_line(anchored, level, f"{level}?")
        assert not find_text(rgb, marked, PANEL_FONT, colour), marked
    assert not find_text(rgb, LEVEL_CAVEAT.split(":")[0], FOOTER_FONT, CAVEAT_COLOUR)
    assert np.asarray(rgb).shape[0] < render_height_with_caveat(anchored)


def render_height_with_caveat(out: AnalysisOutput) -> int:
    """Height of the same overlay when its levels are uncertain (the caveat adds footer rows)."""
    import dataclasses

    assert out.volume is not None
    marked = dataclasses.replace(out.result, vertebrae=[
        dataclasses.replace(v, level_uncertain=True) for v in out.result.vertebrae])
    return int(render_sagittal_overlay(out.volume, out.labels, marked).shape[0])
