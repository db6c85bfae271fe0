"""Body references derived from whole-vertebra labels agree with a real body reference."""

from __future__ import annotations

from pathlib import Path

from osteo_node.pipeline.ct.evaluation import derived_bodies
from osteo_node.pipeline.ct.references import reference_label_volume
from osteo_node.pipeline.metrics import dice
from osteo_node.pipeline.stages.volume import load_nifti

TS = "ct/totalseg_example"


def test_derived_bodies_match_the_example_body_reference(shared_data: Path) -> None:
    """example_ct has both whole vertebrae and a body reference: the body derived from the
    vertebrae alone (in front of the posterior wall on the straightened grid) overlaps it."""
    vol = load_nifti(shared_data / TS / "example_ct.nii.gz").volume
    ref = reference_label_volume(shared_data / TS / "example_ct_vertebrae.nii.gz", "totalseg",
                                 vol.geometry, vol.array.shape)
    derived = derived_bodies(vol, ref)
    assert derived is not None
    given = load_nifti(shared_data / TS / "vertebrae_body.nii.gz").volume.array == 1
    for level in ("L1", "L2", "L3", "L4", "L5"):
        v = ref.levels[level]
        d = dice((ref.array == v) & derived, (ref.array == v) & given)
        assert d >= 0.9, (level, d)
