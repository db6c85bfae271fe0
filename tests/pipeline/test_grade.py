"""Genant grading on REAL vertebral body masks, deformed to known shapes (issue 2, acceptance 3).

L2 of the TotalSegmentator example CT (reference body mask) is resampled to 1 mm and deformed
in its own body frame: every point is moved along the body's SI axis towards the mid-height by
a factor s(u, w) that depends on its anterior-posterior (u) and left-right (w) position:
- biconcave: s = 1 - a * bump(r) with r the distance from the body's central axis; the bump is 0
  at the anterior and posterior measuring lines, so the middle height alone shrinks;
- wedge: s falls linearly from posterior to anterior;
- crush: s constant (all heights reduced; detected against the unfractured neighbours).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray
from scipy import ndimage

from osteo_node.pipeline.results import Heights
from osteo_node.pipeline.stages.grade import (
    GradingRules,
    density_call,
    genant_grade,
    grade_shape,
    grade_spine,
)
from osteo_node.pipeline.stages.measure import (
    BodyFrame,
    HeightMeasurement,
    centroid_mm,
    measure_heights,
)
from osteo_node.pipeline.types import Geometry
from tests.pipeline.real_masks import ExampleCT, example_ct, read, resample_mask

Profile = Callable[[NDArray[np.float64], NDArray[np.float64]], NDArray[np.float64]]


@pytest.fixture(scope="module")
def rules() -> GradingRules:
    return GradingRules.default()


@pytest.fixture(scope="module")
def ct(shared_data: Path) -> ExampleCT:
    return example_ct(shared_data)


def spine_hint(ct: ExampleCT, level: str) -> NDArray[np.float64]:
    order = ["T12", "L1", "L2", "L3", "L4", "L5"]
    i = order.index(level)
    c = {lv: centroid_mm(ct.body(lv), ct.geometry) for lv in order}
    up = c[order[i - 1]] if i > 0 else c[level]
    down = c[order[i + 1]] if i < len(order) - 1 else c[level]
    return up - down


@pytest.fixture(scope="module")
def l2(ct: ExampleCT) -> tuple[NDArray[np.bool_], Geometry, HeightMeasurement]:
    mask, geo = resample_mask(ct.body("L2"), ct.geometry, 1.0)
    return mask, geo, measure_heights(mask, geo, si_hint=spine_hint(ct, "L2"))


def deform(mask: NDArray[np.bool_], geo: Geometry, frame: BodyFrame, s: Profile,
           depth_mm: float) -> NDArray[np.bool_]:
    """Compress a real mask along the frame's SI axis by factor s(u_frac, w_frac) (inverse map)."""
    kji = np.indices(mask.shape).reshape(3, -1).T.astype(np.float64)
    pts = geo.index_to_lps(kji[:, ::-1])
    rel = pts - frame.centre
    u, v, w = rel @ frame.ap, rel @ frame.si, rel @ frame.lr
    body_pts = geo.index_to_lps(np.argwhere(mask)[:, ::-1].astype(np.float64)) - frame.centre
    u_body = body_pts @ frame.ap
    u_mid = (u_body.min() + u_body.max()) / 2.0
    half_w = float(np.abs(body_pts @ frame.lr).max())
    factor = s((u - u_mid) / depth_mm, w / half_w)
    src = pts + ((v / factor) - v)[:, None] * frame.si  # where the deformed point came from
    src_kji = geo.lps_to_index(src)[:, ::-1].T
    vals = ndimage.map_coordinates(mask.astype(np.float32), src_kji, order=1, cval=0.0)
    return vals.reshape(mask.shape) >= 0.5


def test_genant_thresholds(rules: GradingRules) -> None:
    assert [genant_grade(x, rules) for x in (0.0, 0.19, 0.2, 0.24, 0.25, 0.39, 0.40, 0.7)] == [
        0, 0, 1, 1, 2, 2, 3, 3]


def test_untouched_real_vertebrae_grade_0(ct: ExampleCT, rules: GradingRules,
                                          shared_data: Path) -> None:
    heights = {lv: measure_heights(ct.body(lv), ct.geometry, si_hint=spine_hint(ct, lv)).heights
               for lv in ("L1", "L2", "L3", "L4", "L5")}
    grades = grade_spine(heights, rules)
    for lv in ("L2", "L3", "L4", "L5"):
        assert grades[lv].genant_grade == 0 and grades[lv].morphology == "normal", grades[lv]
    # L1 of this patient is a borderline anterior wedge: ~20% by our heights; TotalSegmentator's
    # own report gives 0.22 for L1 (spine_report.json). Either way mild, never moderate.
    assert grades["L1"].losses["wedge"] == pytest.approx(0.22, abs=0.04)
    assert grades["L1"].genant_grade in (0, 1)
    # TPTBox L3 (a different real patient, 1.5 mm)
    d = shared_data / "ct/tptbox_sample"
    vert, geo = read(d / "sub-ct_seg-vert_label-22_msk.nii.gz", np.int32)
    sub, _ = read(d / "sub-ct_seg-subreg_label-22_msk.nii.gz", np.int32)
    h = measure_heights((vert == 22) & np.isin(sub, (49, 50)), geo).heights
    assert grade_shape(h, None, rules).genant_grade == 0


def test_resampled_l2_still_normal(l2: tuple[NDArray[np.bool_], Geometry, HeightMeasurement],
                                   rules: GradingRules) -> None:
    _, _, hm = l2
    assert grade_shape(hm.heights, None, rules).genant_grade == 0


def test_biconcave_middle_half_of_posterior_is_grade_3(
    l2: tuple[NDArray[np.bool_], Geometry, HeightMeasurement], rules: GradingRules
) -> None:
    mask, geo, hm = l2
    h0 = hm.heights
    assert h0.middle and h0.posterior
    a = 1.0 - 0.5 * h0.posterior / h0.middle  # middle -> 50% of the posterior height

    def bump(u: NDArray[np.float64], w: NDArray[np.float64]) -> NDArray[np.float64]:
        r = np.sqrt((u / 0.25) ** 2 + (w / 0.6) ** 2)
        return 1.0 - a * np.where(r < 1.0, np.cos(np.pi * r / 2.0) ** 2, 0.0)

    deformed = deform(mask, geo, hm.frame, bump, hm.ap_depth_mm)
    h = measure_heights(deformed, geo, si_hint=hm.frame.si).heights
    assert h.middle is not None and h.posterior is not None and h.anterior is not None
    assert h.middle / h.posterior == pytest.approx(0.5, abs=0.06)
    assert h.posterior == pytest.approx(h0.posterior, abs=1.5)  # posterior wall untouched
    g = grade_shape(h, None, rules)
    assert g.genant_grade == 3 and g.morphology == "biconcave"


def test_wedge_is_detected(l2: tuple[NDArray[np.bool_], Geometry, HeightMeasurement],
                           rules: GradingRules) -> None:
    mask, geo, hm = l2
    h0 = hm.heights
    assert h0.anterior and h0.posterior
    t = 0.68 * h0.posterior / h0.anterior  # target Ha/Hp = 0.68 (32% loss: Genant 2)
    alpha = (1 - t) / (0.85 - 0.15 * t)

    def ramp(u: NDArray[np.float64], w: NDArray[np.float64]) -> NDArray[np.float64]:
        return 1.0 - alpha * np.clip(u + 0.5, 0.0, 1.0)  # 0 at posterior edge, alpha anterior

    deformed = deform(mask, geo, hm.frame, ramp, hm.ap_depth_mm)
    h = measure_heights(deformed, geo, si_hint=hm.frame.si).heights
    assert h.anterior is not None and h.posterior is not None
    assert h.anterior / h.posterior == pytest.approx(0.68, abs=0.06)
    g = grade_shape(h, None, rules)
    assert g.genant_grade == 2 and g.morphology == "wedge"


def test_crush_against_real_neighbours(ct: ExampleCT, rules: GradingRules,
                                       l2: tuple[NDArray[np.bool_], Geometry,
                                                 HeightMeasurement]) -> None:
    mask, geo, hm = l2
    deformed = deform(mask, geo, hm.frame, lambda u, w: np.full_like(u, 0.6), hm.ap_depth_mm)
    heights: dict[str, Heights | None] = {
        lv: measure_heights(ct.body(lv), ct.geometry, si_hint=spine_hint(ct, lv)).heights
        for lv in ("L1", "L3", "L4")
    }
    heights["L2"] = measure_heights(deformed, geo, si_hint=hm.frame.si).heights
    g = grade_spine(heights, rules)["L2"]
    assert g.morphology == "crush" and g.genant_grade == 3
    assert grade_shape(heights["L2"], None, rules).genant_grade == 0  # needs the neighbours


def test_density_call_fallback_and_contrast(rules: GradingRules) -> None:
    from osteo_node.pipeline.results import TrabecularHU
    from osteo_node.pipeline.stages.grade import ShapeGrade

    t = {"T12": TrabecularHU(150, 150, 30, 500), "L1": TrabecularHU(95, 95, 30, 500),
         "L2": TrabecularHU(120, 120, 30, 500)}
    ok = ShapeGrade(0.05, "normal", 0, {})
    call = density_call(t, {"L1": ok}, "native", False, rules)
    assert (call.level, call.category, call.osteoporosis_suspected) == (
        "L1", "osteoporosis_highly_likely", True)
    broken = ShapeGrade(0.45, "crush", 3, {})
    call = density_call(t, {"L1": broken}, "native", False, rules)
    assert call.level == "T12" and any("L1: deformed" in n for n in call.notes)
    # portal-venous: 11.2 HU subtracted (Pickhardt 2016) before the thresholds
    t2 = {"L1": TrabecularHU(120.0, 120, 30, 500)}
    call = density_call(t2, {}, "portal_venous", True, rules)
    assert call.adjusted_hu == pytest.approx(108.8)
    assert call.category == "osteoporosis_likely" and call.osteoporosis_suspected
    assert density_call(t2, {}, "native", False, rules).category == "low_density_indeterminate"
    none = density_call({}, {}, "native", False, rules)
    assert none.level is None and none.osteoporosis_suspected is None


def test_fused_body_not_graded_nor_used_as_reference(ct: ExampleCT, rules: GradingRules) -> None:
    """Two real bodies merged (L2 + L3, as an over-merging segmentation would) are flagged."""
    heights: dict[str, Heights | None] = {
        lv: measure_heights(ct.body(lv), ct.geometry, si_hint=spine_hint(ct, lv)).heights
        for lv in ("L1", "L4", "L5")
    }
    fused = ct.body("L2") | ct.body("L3")
    # close the disc gap between them as a segmentation would
    fused = ndimage.binary_closing(fused, iterations=3) & ndimage.binary_dilation(
        ct.body("L2") | ct.body("L3"), iterations=3)
    heights["L2"] = measure_heights(fused, ct.geometry, si_hint=spine_hint(ct, "L2")).heights
    assert heights["L2"] is not None and heights["L2"].posterior is not None
    assert heights["L2"].posterior > 45
    g = grade_spine(heights, rules)
    assert g["L2"].genant_grade is None and "fused" in g["L2"].notes[0]
    assert all(g[lv].genant_grade == 0 for lv in ("L4", "L5"))


def test_l5_posterior_height_not_compared_with_its_neighbours(rules: GradingRules) -> None:
    """L5's body is normally deeper in front than behind: its short posterior wall is no crush
    (the same heights one level higher are); its own wedge/biconcave ratios still count."""
    heights = {
        "L3": Heights(28.0, 26.0, 28.0), "L4": Heights(28.0, 25.0, 27.0),
        "L5": Heights(29.0, 25.5, 19.0),
    }
    graded = grade_spine(heights, rules)
    assert "L5" in rules.no_posterior_comparison
    assert graded["L5"].genant_grade == 0 and "crush" not in graded["L5"].losses
    moved = grade_spine({"L2": heights["L3"], "L3": heights["L4"], "L4": heights["L5"]}, rules)
    assert moved["L4"].genant_grade == 2 and moved["L4"].morphology == "crush"
    wedged = grade_spine({**heights, "L5": Heights(14.0, 20.0, 21.0)}, rules)
    assert wedged["L5"].genant_grade == 2 and wedged["L5"].morphology == "wedge"
