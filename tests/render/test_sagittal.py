"""Mid-sagittal overlay on real data (reference labels injected)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from osteo_node.pipeline.ct.analyser import CTAnalyser
from osteo_node.pipeline.ct.evaluation import ReferenceSpec, reference_segment_fn
from osteo_node.render.sagittal import PALETTE, render_sagittal_overlay

TS = "ct/totalseg_example"


def _example_output(shared_data: Path) -> Any:
    """The example CT analysed with its reference labels injected (no model)."""
    spec = ReferenceSpec(shared_data / TS / "vertebrae_pp_refined.nii.gz", "verse",
                         shared_data / TS / "vertebrae_body.nii.gz", (1,))
    return CTAnalyser(segment=reference_segment_fn(spec)).analyse(
        [shared_data / TS / "example_ct.nii.gz"])


def test_overlay_example_ct(shared_data: Path, artifacts_dir: Path) -> None:
    out = _example_output(shared_data)
    assert out.volume is not None and out.labels is not None
    before = out.volume.array.copy()
    rgb = render_sagittal_overlay(out.volume, out.labels, out.result)
    np.testing.assert_array_equal(out.volume.array, before)  # pure: input untouched
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
    assert rgb.shape[0] >= 700
    # red banner across the top
    assert (rgb[5, :200] == (200, 0, 0)).all()
    # the label colours are blended in: some pixels lean towards the L1 colour (red-ish) and
    # the image part is not blank
    image = rgb[40:-40, : rgb.shape[1] - 300].astype(int)
    assert image.std() > 20
    tinted = (image[..., 0] - image[..., 2] > 60).sum()
    assert tinted > 200, PALETTE[0]
    Image.fromarray(rgb).save(artifacts_dir / "sagittal_example_ct_reference.png")


def test_overlay_without_labels_still_has_banner(shared_data: Path) -> None:
    out = _example_output(shared_data)
    assert out.volume is not None
    rgb = render_sagittal_overlay(out.volume, None, out.result)
    assert (rgb[5, :200] == (200, 0, 0)).all()


def test_overlay_with_names_outside_levels(shared_data: Path) -> None:
    """Transitional anatomy gives names such as L6 / T13 (VerSe 25 / 28): still rendered."""
    from osteo_node.pipeline.types import LabelVolume

    out = _example_output(shared_data)
    assert out.volume is not None and out.labels is not None
    arr = np.where(out.labels.array == 24, 25, out.labels.array).astype(np.uint8)
    levels = {**{k: v for k, v in out.labels.levels.items() if k != "L5"}, "L6": 25}
    rgb = render_sagittal_overlay(out.volume, LabelVolume(arr, out.labels.geometry, levels),
                                  out.result)
    assert rgb.shape[2] == 3


def test_footer_says_fractures_not_assessed_when_nothing_was_graded() -> None:
    """'VCF: none' would read as 'no fracture' when no vertebra could be graded (chest series:
    every thoracic boundary is a cut, heights not measurable)."""
    from osteo_node.pipeline.results import AnalysisResult, Findings, VertebraResult
    from osteo_node.render.sagittal import _summary

    def result(graded: tuple[str, ...], grade: int | None) -> AnalysisResult:
        v = VertebraResult(level="T12", level_confidence=0.85, label_value=19,
                           centroid_mm=(0.0, 0.0, 0.0),
                           trabecular_hu=None, heights_mm=None, height_loss=None,
                           morphology="normal", genant_grade=grade)
        f = Findings(osteoporosis_suspected=False, l1_hu=None, vcf_levels=(),
                     max_genant_grade=grade, graded_levels=graded)
        return AnalysisResult("analysed", None, "CT", None, None, "native", None, [v], f)

    assert "fractures: not assessed" in _summary(result((), None))
    assert "VCF: none" not in _summary(result((), None))
    assert "VCF: none" in _summary(result(("T12",), 0))


def test_scale_bar_is_as_long_as_it_says() -> None:
    """The SC's scale bar: 50 mm at 0.4 mm per pixel is 125 pixels, ticks every 10 mm; a
    narrow image gets a shorter bar."""
    from PIL import Image, ImageDraw

    from osteo_node.render.sagittal import SCALE_COLOUR, _draw_scale, scale_bar_mm

    canvas = Image.new("RGB", (600, 100), (0, 0, 0))
    _draw_scale(ImageDraw.Draw(canvas), (10, 80), 0.4, 600)
    row = np.asarray(canvas)[80]
    white = np.flatnonzero((row == SCALE_COLOUR).all(axis=1))
    assert white.min() == 10 and white.max() == 10 + 125
    assert scale_bar_mm(600 * 0.4) == 50.0 and scale_bar_mm(90.0) == 20.0
    assert scale_bar_mm(20.0) == 10.0


def test_overlay_has_a_scale_bar(shared_data: Path) -> None:
    out = _example_output(shared_data)
    assert out.volume is not None and out.labels is not None
    rgb = render_sagittal_overlay(out.volume, out.labels, out.result)
    runs = [r for r in range(rgb.shape[0]) if (rgb[r, 12:60] == 255).all()]
    assert len(runs) >= 3  # the 3-pixel bar from the left margin
