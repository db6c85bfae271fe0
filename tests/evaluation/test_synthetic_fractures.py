"""Real vertebrae deformed into compression fractures (the fracture evaluation's input)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from osteo_node.evaluation.fractures import roc_curve
from osteo_node.evaluation.synthetic_fractures import (
    Deformation,
    FractureTarget,
    calibrated_deform,
    deform,
    measured_loss,
)
from osteo_node.pipeline.ct.column import find_canal
from osteo_node.pipeline.ct.evaluation import load_cases, reference_bodies
from osteo_node.pipeline.ct.references import reference_label_volume
from osteo_node.pipeline.ct.straighten import frame_for
from osteo_node.pipeline.stages.body_heights import measure_heights
from osteo_node.pipeline.stages.grade import GradingRules, genant_grade
from osteo_node.pipeline.stages.measure_params import MeasureParams
from osteo_node.pipeline.stages.volume import load_nifti

TS = "ct/totalseg_example"


@pytest.fixture(scope="module")
def example(shared_data: Path) -> tuple:  # type: ignore[type-arg]
    vol = load_nifti(shared_data / TS / "example_ct.nii.gz").volume
    ref = reference_label_volume(shared_data / TS / "example_ct_vertebrae.nii.gz", "totalseg",
                                 vol.geometry, vol.array.shape)
    bodies = load_nifti(shared_data / TS / "vertebrae_body.nii.gz").volume.array == 1
    canal = find_canal(vol)
    assert canal is not None
    return vol, ref, bodies, frame_for(canal, vol)


def _heights(mask: np.ndarray, vol: object) -> tuple[float, float, float]:
    hm = measure_heights(mask, vol.geometry, None, None, MeasureParams())  # type: ignore[attr-defined]
    h = hm.heights
    assert h.anterior and h.middle and h.posterior
    return h.anterior, h.middle, h.posterior


@pytest.mark.parametrize(("kind", "check"), [
    ("wedge", lambda a, m, p, a0, m0, p0: a / a0 < 0.75 and p / p0 > 0.9),
    ("biconcave", lambda a, m, p, a0, m0, p0: m / m0 < 0.8 and a / a0 > 0.85),
    ("crush", lambda a, m, p, a0, m0, p0: max(a / a0, m / m0, p / p0) < 0.75),
])
def test_deformation_has_the_requested_shape(example: tuple, kind: str, check: object) -> None:  # type: ignore[type-arg]
    vol, ref, bodies, frame = example
    l3 = (ref.array == ref.levels["L3"]) & bodies
    combined = ref.array.astype(np.uint16) * 2 + bodies
    out, both = deform(vol, combined, l3, frame, Deformation(kind, 0.4), fill_mm=8.0)
    l3_after = ((both // 2) == ref.levels["L3"]) & (both % 2 == 1)
    before, after = _heights(l3, vol), _heights(l3_after, vol)
    assert check(*after, *before), (kind, before, after)  # type: ignore[operator]
    # the vertebrae below are untouched, image and labels
    l5 = ref.array == ref.levels["L5"]
    assert np.array_equal(out.array[l5], vol.array[l5])
    assert ((both // 2)[l5] == ref.levels["L5"]).all()


@pytest.mark.parametrize(("kind", "loss"), [("wedge", 0.33), ("biconcave", 0.48),
                                           ("crush", 0.33)])
def test_calibrated_deformation_measures_the_requested_loss(example: tuple, kind: str,  # type: ignore[type-arg]
                                                            loss: float) -> None:
    """A naturally shaped body (example L3 is taller in front than behind) still measures the
    requested loss after the deformation: the grade of the case is the designed one."""
    vol, ref, bodies, frame = example
    value = ref.levels["L3"]
    l3 = (ref.array == value) & bodies
    hp_neighbours = float(np.median([_heights((ref.array == ref.levels[n]) & bodies, vol)[2]
                                     for n in ("L2", "L4")]))
    made = calibrated_deform(
        vol, ref.array.astype(np.uint16) * 2 + bodies, l3, frame,
        FractureTarget(kind, loss, hp_neighbours, 8.0),
        body_after=lambda both: ((both // 2) == value) & (both % 2 == 1))
    # within a few hundredths (3 mm voxels: the measured heights move in steps) and of the
    # designed Genant grade
    rules = GradingRules.default()
    assert made.achieved is not None and abs(made.achieved - loss) < 0.06, made.achieved
    assert genant_grade(made.achieved, rules) == genant_grade(loss, rules)
    uncalibrated = measured_loss(kind, measure_heights(
        l3, vol.geometry).heights, hp_neighbours)
    assert uncalibrated is not None and uncalibrated < 0.2  # the body was not deformed before


def test_roc_curve_and_auc() -> None:
    pts, auc = roc_curve([0.9, 0.8, 0.3, 0.1], [True, True, False, False])
    assert auc == pytest.approx(1.0) and pts[0] == (0.0, 0.0) and pts[-1] == (1.0, 1.0)
    _, auc = roc_curve([0.9, 0.1, 0.8, 0.3], [False, True, False, True])
    assert auc == pytest.approx(0.0)
    _, auc = roc_curve([0.5, 0.5, 0.5, 0.5], [True, False, True, False])
    assert auc == pytest.approx(0.5)
    assert roc_curve([0.1, 0.2], [True, True]) == ([], None)


@pytest.fixture(scope="module")
def thin_discs(shared_data: Path) -> tuple:  # type: ignore[type-arg]
    """s0009 (1.5 mm): its T12/L1 disc is 1-3 mm thin, where a stretched disc looked like bone."""
    case = next(c for c in load_cases(Path("benchmarks/ct_cases.yaml"), shared_data)
                if c.name == "s0009")
    vol = load_nifti(case.input).volume
    ref = reference_label_volume(case.reference.vertebrae, case.reference.numbering,
                                 vol.geometry, vol.array.shape)
    bodies, _ = reference_bodies(case.reference, vol, ref)
    canal = find_canal(vol)
    assert canal is not None and bodies is not None
    return vol, ref, bodies, frame_for(canal, vol)


def test_a_wedge_angulates_the_column_above(thin_discs: tuple) -> None:  # type: ignore[type-arg]
    """T12 comes down with L1's collapsed endplate, its heights kept: the disc above is not
    stretched into the lost height (which made T12 taller in front and a band of bone-bright
    tissue where the disc should be). L2 below is untouched."""
    vol, ref, bodies, frame = thin_discs
    combined = ref.array.astype(np.uint16) * 2 + bodies
    _, both = deform(vol, combined, (ref.array == ref.levels["L1"]) & bodies, frame,
                     Deformation("wedge", 0.4), fill_mm=4.0)
    for level in ("T12", "L2"):
        value = ref.levels[level]
        before = _heights((ref.array == value) & bodies, vol)
        after = _heights(((both // 2) == value) & (both % 2 == 1), vol)
        assert np.allclose(after, before, atol=2.0), (level, before, after)
