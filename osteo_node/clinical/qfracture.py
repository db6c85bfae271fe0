"""QFracture-2012 equations (Hippisley-Cox & Coupland, BMJ 2012;344:e3427).

A pure implementation of the four published Cox fractional-polynomial equations (major
osteoporotic and hip fracture, women and men). Every coefficient, centring constant and
baseline survivor value is read from ``clinical_data/risk_qfracture.yaml``; see that file for
provenance and licence. Results are cumulative incidence in percent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from osteo_node.clinical_data import load

Sex = Literal["female", "male"]
Outcome = Literal["major", "hip"]

# Boolean risk factors known to the equations (a given equation may not use all of them).
FLAGS: tuple[str, ...] = (
    "antidepressant", "any_cancer", "asthma_copd", "care_home", "corticosteroids", "cvd",
    "dementia", "endocrine", "epilepsy", "falls", "prior_fracture", "hrt_oestrogen", "liver",
    "malabsorption", "parkinsons", "ra_sle", "renal", "type1_diabetes", "type2_diabetes",
    "parental_osteoporosis",
)


@dataclass(frozen=True)
class QFractureInputs:
    """Model inputs. ``flags`` holds the names in :data:`FLAGS` that are present (true)."""

    age: float
    sex: Sex
    bmi: float
    smoking: int = 0  # index into smoking_categories
    alcohol: int = 0  # index into alcohol_categories
    ethnicity: int = 1  # 1 = white or not stated
    flags: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        unknown = set(self.flags) - set(FLAGS)
        if unknown:
            raise ValueError(f"unknown QFracture flags: {sorted(unknown)}")


def _params() -> dict[str, Any]:
    return load("risk_qfracture")


def _fp(x: float, p: float, with_log: bool) -> float:
    value = math.log(x) if p == 0 else x**p
    return value * math.log(x) if with_log else value


def linear_predictor(inp: QFractureInputs, outcome: Outcome) -> float:
    """Centred linear predictor ``a`` of one equation (age and BMI used as given)."""
    eq = _params()["equations"][f"{outcome}_{inp.sex}"]
    a = float(eq["alcohol"][inp.alcohol]) + float(eq["ethnicity"][inp.ethnicity])
    a += float(eq["smoking"][inp.smoking])
    for value, terms in ((inp.age / 10.0, eq["age_terms"]), (inp.bmi / 10.0, eq["bmi_terms"])):
        for t in terms:
            a += (_fp(value, float(t["p"]), bool(t["log"])) - float(t["centre"])) * float(t["coef"])
    coefs: dict[str, float] = eq["flags"]
    a += sum(float(coefs[f]) for f in inp.flags if f in coefs)
    return a


def risk_percent(inp: QFractureInputs, outcome: Outcome, years: int) -> float:
    """``100 * (1 - S0(years) ** exp(a))`` for ``years`` in 1..18."""
    survivor = _params()["equations"][f"{outcome}_{inp.sex}"]["survivor"]
    if not 1 <= years <= len(survivor):
        raise ValueError(f"years must be 1..{len(survivor)}, got {years}")
    s0 = float(survivor[years - 1])
    return 100.0 * (1.0 - s0 ** math.exp(linear_predictor(inp, outcome)))


def clamp_to_validity(age: float, bmi: float) -> tuple[float, float, list[str]]:
    """Clamp age and BMI into the ranges the published code accepts; return notes."""
    p = _params()
    lo_a, hi_a = (float(v) for v in p["valid_age"])
    lo_b, hi_b = (float(v) for v in p["valid_bmi"])
    notes: list[str] = []
    if not lo_a <= age <= hi_a:
        notes.append(f"age {age:g} outside QFracture range {lo_a:g}-{hi_a:g}; clamped")
    if not lo_b <= bmi <= hi_b:
        notes.append(f"BMI {bmi:.1f} outside QFracture range {lo_b:g}-{hi_b:g}; clamped")
    return min(max(age, lo_a), hi_a), min(max(bmi, lo_b), hi_b), notes
