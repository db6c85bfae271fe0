"""The typed clinical facts gathered for one patient: :class:`ClinicalRecord` and its parts.

Filled by the FHIR intake (:mod:`osteo_node.clinical.fhir_intake`) and read by the risk,
red-flag and assessment modules. :func:`glucocorticoid_summary` condenses glucocorticoid
exposures into prednisolone-equivalent dose and duration (thresholds from
``clinical_data/clinical_codes.yaml``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from osteo_node.clinical import codes
from osteo_node.clinical.dxa import DxaExam


@dataclass(frozen=True)
class LabValue:
    name: str
    value: float | None
    unit: str | None
    low: float | None = None
    high: float | None = None
    when: str | None = None
    interpretation: str | None = None  # e.g. "H", "A", "POS", "detected"
    text: str | None = None


@dataclass(frozen=True)
class MedicationExposure:
    concept: str
    ingredient: str | None
    daily_dose_mg: float | None
    duration_months: float | None
    active: bool
    source_id: str


@dataclass(frozen=True)
class GlucocorticoidExposure:
    max_daily_prednisolone_mg: float | None
    duration_months: float | None
    long_term: bool | None  # None: dose or duration unknown
    high_dose: bool | None
    current: bool


@dataclass
class ClinicalRecord:
    age: float | None = None
    sex: str | None = None  # "female" | "male" | None
    conditions: dict[str, list[str]] = field(default_factory=dict)  # concept -> displays
    medications: dict[str, list[MedicationExposure]] = field(default_factory=dict)
    labs: dict[str, LabValue] = field(default_factory=dict)
    bmi: float | None = None
    smoking_category: int | None = None
    alcohol_category: int | None = None
    falls: bool | None = None
    dxa: DxaExam | None = None
    resource_counts: dict[str, int] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)

    def glucocorticoids(self) -> GlucocorticoidExposure | None:
        return glucocorticoid_summary(self.medications.get("glucocorticoid", []))


def glucocorticoid_summary(exposures: list[MedicationExposure]) -> GlucocorticoidExposure | None:
    if not exposures:
        return None
    med = codes.table()["medications"]["glucocorticoid"]
    factors: dict[str, float] = med["prednisolone_equivalent_factor"]
    doses: list[float] = []
    for e in exposures:
        if e.daily_dose_mg is not None and e.ingredient in factors:
            doses.append(e.daily_dose_mg * float(factors[e.ingredient]))
    durations = [e.duration_months for e in exposures if e.duration_months is not None]
    dose = max(doses) if doses else None
    months = max(durations) if durations else None
    long_term = None
    if dose is not None and months is not None:
        long_term = dose >= float(med["long_term_min_mg_per_day"]) and months >= float(
            med["long_term_min_months"]
        )
    elif months is not None and months < float(med["long_term_min_months"]):
        long_term = False
    high = None if dose is None else dose >= float(med["high_dose_mg_per_day"])
    return GlucocorticoidExposure(dose, months, long_term, high, any(e.active for e in exposures))
