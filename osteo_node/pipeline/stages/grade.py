"""Genant semiquantitative grades, morphology and the opportunistic density call.

All thresholds come from ``osteo_node/clinical_data/ct_screening.yaml`` (with sources).

Shape: for each vertebra three fractional height losses are computed
- wedge     = 1 - Ha / Hp (anterior vs its own posterior height),
- biconcave = 1 - Hm / Hp (middle vs its own posterior height),
- crush     = 1 - Hp / Hp_ref, Hp_ref = median posterior height of the neighbours within
  ``neighbour_levels`` that are not themselves deformed by wedge/biconcave loss;
the height loss is the largest, the morphology is the kind that gave it, and the Genant grade
follows the loss (0 < 20%, 1 20-25%, 2 25-40%, 3 > 40%).

Density: trabecular mean HU at L1 (fallback T12, then L2, when L1 is fractured, absent or has
no usable ROI), minus the documented contrast-phase adjustment, against Pickhardt 2013 cut-offs.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from osteo_node.pipeline.results import Heights, Morphology, TrabecularHU, level_index


def _value(entry: Any) -> Any:
    return entry["value"] if isinstance(entry, dict) and "value" in entry else entry


@dataclass(frozen=True)
class GradingRules:
    grade_min_loss: dict[int, float]
    fracture_min_grade: int
    neighbour_levels: int
    levels_measured: tuple[str, ...]
    primary_level: str
    fallback_levels: tuple[str, ...]
    categories: tuple[tuple[str, float], ...]
    suspected_at_or_below_hu: float
    exclude_min_grade: int
    min_roi_voxels: int
    contrast_adjustment_hu: dict[str, float]
    max_height_ratio_to_neighbours: float = float("inf")
    min_level_confidence: float = 0.0  # below it a level name is uncertain (level_uncertain)
    no_posterior_comparison: frozenset[str] = frozenset()  # no crush loss (L5: see the YAML)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> GradingRules:
        g, d = data["genant"], data["density"]
        return cls(
            grade_min_loss={int(k): float(v) for k, v in _value(g["grade_min_loss"]).items()},
            fracture_min_grade=int(_value(g["fracture_min_grade"])),
            neighbour_levels=int(_value(g["neighbour_levels"])),
            no_posterior_comparison=frozenset(_value(g.get("no_posterior_comparison", []))),
            levels_measured=tuple(_value(data["levels_measured"])),
            primary_level=str(_value(d["primary_level"])),
            fallback_levels=tuple(_value(d["fallback_levels"])),
            categories=tuple(
                (str(c["name"]), float(c["max_hu"])) for c in _value(d["categories"])
            ),
            suspected_at_or_below_hu=float(_value(d["suspected_at_or_below_hu"])),
            exclude_min_grade=int(_value(d["exclude_min_grade"])),
            min_roi_voxels=int(_value(d["min_roi_voxels"])),
            contrast_adjustment_hu={
                k: float(_value(v)) for k, v in data["contrast_adjustment_hu"].items()
            },
            max_height_ratio_to_neighbours=float(_value(
                data.get("quality", {}).get("max_height_ratio_to_neighbours", float("inf"))
            )),
            min_level_confidence=float(_value(
                data.get("quality", {}).get("min_level_confidence", 0.0)
            )),
        )

    @classmethod
    def default(cls) -> GradingRules:
        from osteo_node.clinical_data import load

        return cls.from_mapping(load("ct_screening"))


def level_uncertain(level_confidence: float, rules: GradingRules) -> bool:
    """THE rule for reporting a level name as uncertain ("L1?"): its labelling confidence is
    below ``quality.min_level_confidence`` (clinical_data/ct_screening.yaml, with rationale)."""
    return level_confidence < rules.min_level_confidence


def level_uncertain_note(confidence: float, rules: GradingRules) -> str:
    """The per-vertebra note of a name judged uncertain by :func:`level_uncertain`."""
    return (f"level uncertain (level confidence {confidence:g} < "
            f"{rules.min_level_confidence:g}): named without a reliable anatomical landmark; "
            "verify the level on the images")


def level_uncertain_warning(levels: list[str], rules: GradingRules) -> str:
    """The result-level warning listing the levels whose names are uncertain."""
    return ("level uncertain: " + ", ".join(levels)
            + f" (level confidence < {rules.min_level_confidence:g}; see the labelling "
            "notes): names may be off by one or more levels")


@dataclass(frozen=True)
class ShapeGrade:
    height_loss: float | None
    morphology: Morphology
    genant_grade: int | None
    losses: dict[str, float]
    notes: tuple[str, ...] = ()


def genant_grade(loss: float, rules: GradingRules) -> int:
    grade = 0
    for g, threshold in sorted(rules.grade_min_loss.items()):
        if loss >= threshold - 1e-9:
            grade = g
    return grade


def _own_losses(h: Heights) -> dict[str, float]:
    out: dict[str, float] = {}
    if h.posterior and h.posterior > 0:
        if h.anterior is not None:
            out["wedge"] = max(0.0, 1.0 - h.anterior / h.posterior)
        if h.middle is not None:
            out["biconcave"] = max(0.0, 1.0 - h.middle / h.posterior)
    return out


def grade_shape(
    heights: Heights | None, posterior_reference: float | None, rules: GradingRules,
    compared: bool = True,
) -> ShapeGrade:
    """Grade one vertebra from its heights and the neighbours' reference posterior height
    (``compared=False``: a level whose posterior height is not compared by rule)."""
    if heights is None or not heights.posterior:
        return ShapeGrade(None, "indeterminate", None, {}, ("heights not measurable",))
    losses = _own_losses(heights)
    notes: list[str] = []
    if posterior_reference:
        losses["crush"] = max(0.0, 1.0 - heights.posterior / posterior_reference)
    elif compared:
        notes.append("no unfractured neighbour: posterior height not compared")
    else:
        notes.append("posterior height not compared with the neighbours at this level "
                     "(normally shorter)")
    if not losses:
        return ShapeGrade(None, "indeterminate", None, {}, ("heights incomplete",))
    kind, loss = max(losses.items(), key=lambda kv: kv[1])
    grade = genant_grade(loss, rules)
    morphology: Morphology = "normal" if grade == 0 else kind  # type: ignore[assignment]
    return ShapeGrade(round(loss, 3), morphology, grade,
                      {k: round(v, 3) for k, v in losses.items()}, tuple(notes))


def grade_spine(
    heights: Mapping[str, Heights | None], rules: GradingRules
) -> dict[str, ShapeGrade]:
    """Grade every level, comparing posterior heights with unfractured neighbours.

    A body much taller than its neighbours (``max_height_ratio_to_neighbours``) is a
    segmentation error (fused vertebrae): it is not graded nor used as a reference.
    """
    lowest = min(rules.grade_min_loss.values())
    posterior = {lv: h.posterior for lv, h in heights.items() if h is not None and h.posterior}
    implausible: set[str] = set()
    for level, hp in posterior.items():
        near = [p for other, p in posterior.items() if other != level
                and 0 < abs(level_index(other) - level_index(level)) <= rules.neighbour_levels]
        if near and hp > rules.max_height_ratio_to_neighbours * float(np.median(near)):
            implausible.add(level)
    normal_posterior: dict[str, float] = {}
    for level, h in heights.items():
        if h is not None and h.posterior and level not in implausible:
            own = _own_losses(h)
            if not own or max(own.values()) < lowest:
                normal_posterior[level] = h.posterior
    out: dict[str, ShapeGrade] = {}
    for level, h in heights.items():
        if level in implausible:
            out[level] = ShapeGrade(None, "indeterminate", None, {}, (
                "body much taller than its neighbours: probably fused vertebrae in the "
                "segmentation; not graded",))
            continue
        idx = level_index(level)
        ref = [
            p for other, p in normal_posterior.items()
            if other != level and 0 < abs(level_index(other) - idx) <= rules.neighbour_levels
        ]
        if level in rules.no_posterior_comparison:
            out[level] = grade_shape(h, None, rules, compared=False)
            continue
        out[level] = grade_shape(h, float(np.median(ref)) if ref else None, rules)
    return out


@dataclass(frozen=True)
class DensityCall:
    level: str | None
    measured_hu: float | None
    adjusted_hu: float | None
    adjustment_hu: float
    category: str | None
    osteoporosis_suspected: bool | None
    notes: tuple[str, ...]


def density_category(hu: float, rules: GradingRules) -> str:
    for name, max_hu in rules.categories:
        if hu <= max_hu or math.isinf(max_hu):
            return name
    return rules.categories[-1][0]


def contrast_adjustment(phase: str, contrast_given: bool | None, rules: GradingRules) -> float:
    adj = rules.contrast_adjustment_hu
    if phase in adj:
        return adj[phase]
    if contrast_given:
        return adj.get("contrast_unknown_phase", 0.0)
    return 0.0


def density_call(
    trabecular: Mapping[str, TrabecularHU | None],
    grades: Mapping[str, ShapeGrade],
    phase: str,
    contrast_given: bool | None,
    rules: GradingRules,
    *,
    incomplete: Collection[str] = (),
) -> DensityCall:
    """Pick the density level (L1, fallbacks) and classify its contrast-adjusted mean HU.

    Levels in ``incomplete`` (body cut by the scan edge) are used only when no complete
    candidate level is usable.
    """
    for allow_incomplete in (False, True):
        notes: list[str] = []
        for level in (rules.primary_level, *rules.fallback_levels):
            t = trabecular.get(level)
            g = grades.get(level)
            if t is None or t.voxels < rules.min_roi_voxels:
                notes.append(
                    f"{level}: {'absent' if level not in trabecular else 'no usable ROI'}")
                continue
            if level in incomplete and not allow_incomplete:
                notes.append(f"{level}: cut by the scan edge, a complete level is preferred")
                continue
            grade = g.genant_grade if g is not None else None
            if grade is not None and grade >= rules.exclude_min_grade:
                notes.append(f"{level}: deformed (Genant {grade}), not used for density")
                continue
            if grade is not None and grade >= rules.fracture_min_grade:
                notes.append(
                    f"{level}: mild deformity (Genant {grade}); density still measured here")
            adjustment = contrast_adjustment(phase, contrast_given, rules)
            adjusted = t.mean - adjustment
            if adjustment:
                notes.append(
                    f"contrast phase {phase}: {adjustment:g} HU subtracted before thresholds"
                )
            if level != rules.primary_level:
                notes.append(f"density measured at {level} instead of {rules.primary_level}")
            return DensityCall(
                level, t.mean, round(adjusted, 1), adjustment,
                density_category(adjusted, rules),
                adjusted <= rules.suspected_at_or_below_hu, tuple(notes),
            )
    return DensityCall(None, None, None, 0.0, None, None,
                       (*notes, "no level usable for the density call"))
