"""One patient-level assessment combining DXA, clinical data, imaging and red flags.

:class:`PatientAssessment` is the object the SR exporter, the worklist and the dashboard use;
``to_json()`` writes the fixed ``osteo-node assess`` schema (issue 5; extra keys allowed).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from osteo_node.clinical import red_flags as rf
from osteo_node.clinical.dxa import DxaExam
from osteo_node.clinical.interpret import DxaInterpretation, MenopausalStatus, interpret
from osteo_node.clinical.record import ClinicalRecord
from osteo_node.clinical.risk import ImagingEvidence, RiskResult, assess_risk
from osteo_node.clinical_data import load

SITE_ORDER: tuple[str, ...] = ("lumbar_spine", "femoral_neck", "total_hip", "radius_33")


@dataclass(frozen=True)
class RiskFactor:
    code: str
    label: str
    source: str  # "fhir" | "imaging"
    detail: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "label": self.label, "source": self.source,
                "detail": self.detail}


@dataclass
class PatientAssessment:
    age: float | None
    sex: str | None
    dxa: DxaInterpretation | None
    risk_factors: list[RiskFactor]
    risk: RiskResult
    red_flags: list[rf.RedFlag]
    imaging: ImagingEvidence | None = None
    on_treatment: bool = False
    messages: list[str] = field(default_factory=list)

    @property
    def pathological_fracture_suspected(self) -> bool:
        return bool(self.red_flags)

    def summary(self) -> str:
        parts = []
        if self.dxa is not None and self.dxa.category is not None:
            text = f"DXA: {self.dxa.category.replace('_', ' ')} (lowest site " \
                   f"{self.dxa.lowest_site}, {self.dxa.basis.replace('_', '-')}s)"
            if self.dxa.forearm_only_osteoporosis:
                text += "; osteoporosis at the 33% radius only"
            if self.dxa.discordance is not None and self.dxa.discordance.present:
                text += "; spine-hip discordance"
            parts.append(text + ".")
        else:
            parts.append("DXA: not available.")
        if self.imaging is not None and self.imaging.vertebral_fracture_levels:
            parts.append("Imaging: vertebral fracture at "
                         + ", ".join(self.imaging.vertebral_fracture_levels) + ".")
        r = self.risk
        if r.major_fracture_10y is not None and r.hip_fracture_10y is not None:
            parts.append(
                f"{r.model} 10-year risk: major osteoporotic fracture "
                f"{r.major_fracture_10y:.1f}%, hip fracture {r.hip_fracture_10y:.1f}% "
                f"({r.category} risk)."
            )
            if r.disclaimer:
                parts.append(f"ClinRisk Ltd. disclaimer for {r.model}: {r.disclaimer}")
        else:
            parts.append(f"{r.model} risk not computed (missing: "
                         + ", ".join(m for m in r.missing_inputs
                                     if m in ("age", "sex", "bmi")) + ").")
        if self.red_flags:
            parts.append(
                "RED FLAGS: " + "; ".join(f.reason for f in self.red_flags)
                + f" - {rf.action()}."
            )
        from osteo_node import DISCLAIMER

        parts.append(DISCLAIMER)
        return " ".join(parts)

    def to_json(self) -> dict[str, Any]:
        from osteo_node import DISCLAIMER

        return {
            "patient": {"age": self.age, "sex": self.sex},
            "dxa": _dxa_json(self.dxa),
            "risk_factors": [f.to_json() for f in self.risk_factors],
            "risk": self.risk.to_json(),
            "red_flags": [f.to_json() for f in self.red_flags],
            "pathological_fracture_suspected": self.pathological_fracture_suspected,
            "red_flag_action": rf.action() if self.red_flags else None,
            "imaging": None if self.imaging is None else {
                "study_instance_uid": self.imaging.study_instance_uid,
                "vertebral_fracture_levels": list(self.imaging.vertebral_fracture_levels),
                "max_genant_grade": self.imaging.max_genant_grade,
                "l1_hu": self.imaging.l1_hu,
                "density_level": self.imaging.density_level,
                "density_level_uncertain": self.imaging.density_level_uncertain,
                "density_category": self.imaging.density_category,
            },
            "on_anti_osteoporosis_treatment": self.on_treatment,
            "messages": list(self.messages),
            "summary": self.summary(),
            "disclaimer": DISCLAIMER,
        }


def _dxa_json(d: DxaInterpretation | None) -> dict[str, Any]:
    if d is None:
        return {"category": None, "lowest_site": None, "sites": {},
                "forearm_only_osteoporosis": False, "discordance": None, "basis": None}
    sites = {
        name: {
            "t_score": s.t_score, "z_score": s.z_score, "category": s.category,
            "used_levels": list(s.used_levels), "excluded_levels": list(s.excluded_levels),
            "notes": list(s.notes),
        }
        for name in SITE_ORDER if (s := d.sites.get(name)) is not None
    }
    disc = d.discordance
    return {
        "category": d.category,
        "lowest_site": d.lowest_site,
        "sites": sites,
        "forearm_only_osteoporosis": d.forearm_only_osteoporosis,
        "discordance": None if disc is None else disc.present,
        "discordance_detail": None if disc is None else {
            "major": disc.major, "spine_category": disc.spine_category,
            "hip_category": disc.hip_category, "hip_site": disc.hip_site,
        },
        "basis": d.basis,
        "notes": list(d.notes),
    }


def risk_factors(rec: ClinicalRecord | None, imaging: ImagingEvidence | None) -> list[RiskFactor]:
    codes = load("clinical_codes")
    out: list[RiskFactor] = []
    if rec is not None:
        specific = set(rec.conditions.get("myeloma", [])) | set(
            rec.conditions.get("bone_metastasis", []))
        for name, displays in rec.conditions.items():
            entry = codes["conditions"].get(name, {})
            shown = set(displays) - specific if name == "cancer" else set(displays)
            if not shown:  # the same Condition already listed under a specific concept
                continue
            if entry.get("qfracture") or entry.get("secondary_cause") or entry.get("red_flag"):
                out.append(RiskFactor(name, str(entry.get("label", name)), "fhir",
                                      "; ".join(sorted(shown))))
        for name, exposures in rec.medications.items():
            entry = codes["medications"].get(name, {})
            if name == "anti_osteoporosis":
                continue
            if name == "glucocorticoid":
                out.append(_glucocorticoid_factor(rec))
                continue
            if entry.get("qfracture") or entry.get("secondary_cause"):
                ingredients = sorted({e.ingredient for e in exposures if e.ingredient})
                out.append(RiskFactor(name, str(entry.get("label", name)), "fhir",
                                      ", ".join(ingredients) or None))
        out.extend(_lifestyle_factors(rec))
    if imaging is not None and imaging.vertebral_fracture_levels:
        out.append(RiskFactor(
            "prevalent_vertebral_fracture", "prevalent vertebral fracture on imaging", "imaging",
            ", ".join(imaging.vertebral_fracture_levels)
            + (f" (max Genant grade {imaging.max_genant_grade})"
               if imaging.max_genant_grade is not None else ""),
        ))
    return out


def _lifestyle_factors(rec: ClinicalRecord) -> list[RiskFactor]:
    """Current smoking and high alcohol intake, cut-offs from clinical_codes.yaml."""
    listing = load("clinical_codes")["risk_factor_listing"]
    model = load("risk_qfracture")
    out: list[RiskFactor] = []
    if rec.smoking_category is not None:
        name = str(model["smoking_categories"][rec.smoking_category])
        if name in listing["current_smoker_categories"]:
            out.append(RiskFactor("current_smoking", "current smoker", "fhir", name))
    if rec.alcohol_category is not None:
        units = float(listing["alcohol_min_units_per_day"])
        # first category whose range starts at or above the cut-off
        bounds = [float(b) for b in load("clinical_codes")["alcohol_units_upper_bounds"]]
        if rec.alcohol_category >= sum(1 for b in bounds if units >= b):
            out.append(RiskFactor("alcohol", f"alcohol {units:g} or more units/day", "fhir",
                                  str(model["alcohol_categories"][rec.alcohol_category])))
    return out


def _glucocorticoid_factor(rec: ClinicalRecord) -> RiskFactor:
    gc = rec.glucocorticoids()
    assert gc is not None
    bits = []
    if gc.max_daily_prednisolone_mg is not None:
        bits.append(f"prednisolone-equivalent {gc.max_daily_prednisolone_mg:.1f} mg/day")
    else:
        bits.append("dose not recorded")
    if gc.duration_months is not None:
        bits.append(f"for {gc.duration_months:.0f} months")
    else:
        bits.append("duration not recorded")
    if gc.high_dose:
        bits.append("high dose")
    if gc.long_term:
        return RiskFactor("glucocorticoids_long_term", "long-term glucocorticoid therapy",
                          "fhir", ", ".join(bits))
    return RiskFactor("glucocorticoids", "glucocorticoid therapy", "fhir", ", ".join(bits))


def build_assessment(
    rec: ClinicalRecord | None,
    dxa_exam: DxaExam | None = None,
    analysis: Mapping[str, Any] | None = None,
    menopause: MenopausalStatus = "unknown",
) -> PatientAssessment:
    """Combine whatever is available; every part is optional."""
    messages: list[str] = list(rec.messages) if rec else ["no clinical (FHIR) data"]
    imaging = ImagingEvidence.from_analysis(analysis) if analysis is not None else None
    if analysis is not None and analysis.get("status") == "not_analysable":
        messages.append(f"imaging not analysable: {analysis.get('reason')}")
    exam = dxa_exam if dxa_exam is not None else (rec.dxa if rec else None)
    dxa = None
    if exam is not None and not exam.is_empty():
        dxa = interpret(
            exam, rec.age if rec else None, rec.sex if rec else None, menopause,
            imaging.vertebral_fracture_levels if imaging else (),
        )
    risk = assess_risk(rec, imaging, dxa)
    flags: list[rf.RedFlag] = []
    if analysis is not None:
        flags.extend(rf.imaging_flags(analysis))
    if rec is not None:
        flags.extend(rf.clinical_flags(rec))
    if flags and imaging is not None and imaging.vertebral_fracture_levels:
        risk.notes.append(
            "the imaging vertebral fracture was counted as a fragility fracture, but red flags "
            "suggest it may be pathological: the osteoporotic risk may be overstated"
        )
    on_treatment = bool(rec and any(e.active for e in rec.medications.get("anti_osteoporosis", [])))
    return PatientAssessment(
        age=rec.age if rec else None, sex=rec.sex if rec else None, dxa=dxa,
        risk_factors=risk_factors(rec, imaging), risk=risk, red_flags=flags, imaging=imaging,
        on_treatment=on_treatment, messages=messages,
    )
