"""Individual fracture risk: QFracture-2012 plus imaging evidence, with a risk category.

How imaging evidence enters (documented rule, see ``risk_qfracture.yaml``):

- A prevalent vertebral fracture found by our CT/MR analysis counts as a prior spine fracture:
  it sets the QFracture ``prior_fracture`` input (the model's "previous fracture of hip, spine,
  wrist or shoulder") and, per CAROC 2010, makes the category ``high``.
- QFracture-2012 has no bone density input. CT-derived density (L1 HU) and DXA T-scores are
  therefore reported beside the risk (``inputs_not_used``), never fed into it.

Output: 5- and 10-year risks (percent) of hip and major osteoporotic fracture, a category and
the inputs that were missing or assumed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from osteo_node.clinical import qfracture
from osteo_node.clinical.fhir_intake import ClinicalRecord
from osteo_node.clinical.fracture_flag import risk_prior_fracture_min_genant_grade
from osteo_node.clinical.interpret import DxaInterpretation
from osteo_node.clinical_data import load


@dataclass(frozen=True)
class ImagingEvidence:
    """What the imaging analysis says that matters for risk and red flags."""

    vertebral_fracture_levels: tuple[str, ...] = ()
    max_genant_grade: int | None = None
    l1_hu: float | None = None
    density_category: str | None = None
    osteoporosis_suspected: bool | None = None
    study_instance_uid: str | None = None

    @classmethod
    def from_analysis(cls, analysis: Mapping[str, Any]) -> ImagingEvidence:
        f = analysis.get("findings") or {}
        levels = {str(v) for v in f.get("vcf_levels") or []}
        min_grade = risk_prior_fracture_min_genant_grade()
        for v in analysis.get("vertebrae") or []:
            if isinstance(v, Mapping) and isinstance(v.get("genant_grade"), int) \
                    and v["genant_grade"] >= min_grade:
                levels.add(str(v.get("level")))
        grade = f.get("max_genant_grade")
        l1 = f.get("l1_hu")
        return cls(
            tuple(sorted(levels)), grade if isinstance(grade, int) else None,
            float(l1) if isinstance(l1, (int, float)) else None,
            f.get("density_category"), f.get("osteoporosis_suspected"),
            analysis.get("study_instance_uid"),
        )


@dataclass
class RiskResult:
    model: str
    hip_fracture_5y: float | None = None
    hip_fracture_10y: float | None = None
    major_fracture_5y: float | None = None
    major_fracture_10y: float | None = None
    category: str | None = None
    missing_inputs: list[str] = field(default_factory=list)
    inputs_used: dict[str, Any] = field(default_factory=dict)
    inputs_not_used: list[str] = field(default_factory=list)
    category_reasons: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        r = _round
        return {
            "model": self.model,
            "hip_fracture_10y": r(self.hip_fracture_10y),
            "major_fracture_10y": r(self.major_fracture_10y),
            "hip_fracture_5y": r(self.hip_fracture_5y),
            "major_fracture_5y": r(self.major_fracture_5y),
            "units": "percent (cumulative incidence)",
            "category": self.category,
            "category_reasons": list(self.category_reasons),
            "missing_inputs": list(self.missing_inputs),
            "inputs_used": dict(self.inputs_used),
            "inputs_not_used": list(self.inputs_not_used),
            "notes": list(self.notes),
        }


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 1)


def _params() -> dict[str, Any]:
    return load("risk_qfracture")


def model_flags(
    rec: ClinicalRecord | None, imaging: ImagingEvidence | None
) -> tuple[set[str], list[str]]:
    """QFracture flags from coded conditions, medications and imaging; and explanations."""
    codes = load("clinical_codes")
    flags: set[str] = set()
    why: list[str] = []
    if rec is not None:
        for name in rec.conditions:
            flag = codes["conditions"].get(name, {}).get("qfracture")
            if flag:
                flags.add(str(flag))
        for name, exposures in rec.medications.items():
            flag = codes["medications"].get(name, {}).get("qfracture")
            if not flag:
                continue
            if name == "glucocorticoid":
                gc = rec.glucocorticoids()
                if gc is not None and (gc.current or gc.long_term):
                    flags.add(str(flag))
            elif any(e.active for e in exposures):
                flags.add(str(flag))
    if imaging is not None and imaging.vertebral_fracture_levels:
        if "prior_fracture" not in flags:
            why.append(
                "prevalent vertebral fracture on imaging ("
                + ", ".join(imaging.vertebral_fracture_levels)
                + ") counted as prior spine fracture"
            )
        flags.add("prior_fracture")
    return flags, why


def _category(
    major10: float, hip10: float, rec: ClinicalRecord | None, imaging: ImagingEvidence | None
) -> tuple[str, list[str]]:
    c = _params()["categories"]
    order: list[str] = list(c["order"])
    reasons: list[str] = []
    cat = "low"
    if major10 >= float(c["major_moderate_at_or_above"]):
        cat = "moderate"
    if major10 >= float(c["major_high_at_or_above"]):
        cat = "high"
        reasons.append(f"10-year major fracture risk >= {c['major_high_at_or_above']}%")
    if hip10 >= float(c["hip_high_at_or_above"]):
        cat = "high"
        reasons.append(f"10-year hip fracture risk >= {c['hip_high_at_or_above']}%")
    hip_or_spine = bool(imaging and imaging.vertebral_fracture_levels) or bool(
        rec and "vertebral_or_hip_fracture" in rec.conditions
    )
    if c["prior_hip_or_vertebral_fracture_is_high"] and hip_or_spine:
        cat = "high"
        reasons.append("prior hip or vertebral fragility fracture (CAROC: high risk)")
    gc = rec.glucocorticoids() if rec is not None else None
    if c["glucocorticoids_raise_one_level"] and gc is not None and gc.long_term and cat != "high":
        cat = order[order.index(cat) + 1]
        reasons.append("long-term glucocorticoids raise the category one level (CAROC)")
    if not reasons:
        reasons.append(f"10-year major fracture risk {major10:.1f}%")
    return cat, reasons


def assess_risk(
    rec: ClinicalRecord | None,
    imaging: ImagingEvidence | None = None,
    dxa: DxaInterpretation | None = None,
) -> RiskResult:
    p = _params()
    res = RiskResult(model=str(p["model"]))
    age = rec.age if rec else None
    sex = rec.sex if rec else None
    bmi = rec.bmi if rec else None
    for name, value in (("age", age), ("sex", sex), ("bmi", bmi)):
        if value is None:
            res.missing_inputs.append(name)
    smoking = rec.smoking_category if rec else None
    alcohol = rec.alcohol_category if rec else None
    if smoking is None:
        res.missing_inputs.append("smoking")
    if alcohol is None:
        res.missing_inputs.append("alcohol")
    res.missing_inputs.append("ethnicity")
    if rec is None or "Condition" not in rec.resource_counts:
        res.missing_inputs.append("conditions")
    if rec is None or not ({"MedicationStatement", "MedicationRequest"} & set(rec.resource_counts)):
        res.missing_inputs.append("medications")
    res.notes.append(
        "ethnicity is not collected: the model's 'white or not stated' category is used; "
        "absent smoking/alcohol records use the non-smoker / non-drinker categories; risk "
        "factors not coded in the record are taken as absent"
    )
    res.inputs_not_used.append(str(p["not_model_inputs"]["bmd"]))
    if imaging is not None and imaging.l1_hu is not None:
        res.inputs_not_used.append(f"CT L1 attenuation {imaging.l1_hu:.0f} HU (not a model input)")
    if dxa is not None and dxa.category is not None:
        res.inputs_not_used.append(f"DXA category {dxa.category} at {dxa.lowest_site}")
    gc = rec.glucocorticoids() if rec is not None else None
    if gc is not None and gc.long_term is None:
        res.notes.append("glucocorticoid dose or duration not recorded: long-term use unknown")
    if age is None or sex not in ("female", "male") or bmi is None:
        res.notes.append("risk not computed: " + ", ".join(
            n for n in ("age", "sex", "bmi") if n in res.missing_inputs))
        return res
    model_sex: qfracture.Sex = "female" if sex == "female" else "male"
    lo_age, hi_age = (float(v) for v in p["valid_age"])
    if not lo_age <= age <= hi_age:
        res.notes.append(f"risk not computed: age {age:g} outside {lo_age:g}-{hi_age:g}")
        return res
    age_c, bmi_c, clamp_notes = qfracture.clamp_to_validity(age, bmi)
    res.notes.extend(clamp_notes)
    flags, why = model_flags(rec, imaging)
    res.notes.extend(why)
    inp = qfracture.QFractureInputs(
        age=age_c, sex=model_sex, bmi=bmi_c, smoking=smoking or 0, alcohol=alcohol or 0,
        ethnicity=1, flags=frozenset(flags),
    )
    res.inputs_used = {
        "age": age_c, "sex": sex, "bmi": round(bmi_c, 1),
        "smoking": p["smoking_categories"][inp.smoking],
        "alcohol": p["alcohol_categories"][inp.alcohol],
        "risk_factors": sorted(flags),
    }
    res.hip_fracture_5y = qfracture.risk_percent(inp, "hip", 5)
    res.hip_fracture_10y = qfracture.risk_percent(inp, "hip", 10)
    res.major_fracture_5y = qfracture.risk_percent(inp, "major", 5)
    res.major_fracture_10y = qfracture.risk_percent(inp, "major", 10)
    res.category, res.category_reasons = _category(
        res.major_fracture_10y, res.hip_fracture_10y, rec, imaging
    )
    return res
