"""Mid-sagittal overlay on real data (reference labels injected)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from osteo_node.pipeline.ct.analyser import CTAnalyser
from osteo_node.pipeline.ct.evaluation import ReferenceSpec, reference_segment_fn
from osteo_node.render.sagittal import PALETTE, render_sagittal_overlay

TS = "ct/totalseg_example"


def test_overlay_example_ct(shared_data: Path, artifacts_dir: Path) -> None:
    spec = ReferenceSpec(shared_data / TS / "vertebrae_pp_refined.nii.gz", "verse",
                         shared_data / TS / "vertebrae_body.nii.gz", (1,))
    out = CTAnalyser(segment=reference_segment_fn(spec)).analyse(
        [shared_data / TS / "example_ct.nii.gz"])
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
    spec = ReferenceSpec(shared_data / TS / "vertebrae_pp_refined.nii.gz", "verse",
                         shared_data / TS / "vertebrae_body.nii.gz", (1,))
    out = CTAnalyser(segment=reference_segment_fn(spec)).analyse(
        [shared_data / TS / "example_ct.nii.gz"])
    assert out.volume is not None
    rgb = render_sagittal_overlay(out.volume, None, out.result)
    assert (rgb[5, :200] == (200, 0, 0)).all()


def test_overlay_with_names_outside_levels(shared_data: Path) -> None:
    """Transitional anatomy gives names such as L6 / T13 (VerSe 25 / 28): still rendered."""
    from osteo_node.pipeline.types import LabelVolume

    spec = ReferenceSpec(shared_data / TS / "vertebrae_pp_refined.nii.gz", "verse",
                         shared_data / TS / "vertebrae_body.nii.gz", (1,))
    out = CTAnalyser(segment=reference_segment_fn(spec)).analyse(
        [shared_data / TS / "example_ct.nii.gz"])
    assert out.volume is not None and out.labels is not None
    arr = np.where(out.labels.array == 24, 25, out.labels.array).astype(np.uint8)
    levels = {**{k: v for k, v in out.labels.levels.items() if k != "L5"}, "L6": 25}
    rgb = render_sagittal_overlay(out.volume, LabelVolume(arr, out.labels.geometry, levels),
                                  out.result)
    assert rgb.shape[2] == 3
