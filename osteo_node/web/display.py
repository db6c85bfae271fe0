"""How worklist values read on the pages (pure functions, used by the templates)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from osteo_node.worklist.store import WorklistRow


def age_sex(row: WorklistRow) -> str:
    """Age at the study in whole years and sex, e.g. "59 F"; "-" for what is unknown."""
    b, s = row.patient_birth_date, row.study_date
    age = "-"
    if len(b) == 8 and len(s) == 8 and b.isdigit() and s.isdigit():
        years = int(s[:4]) - int(b[:4]) - (1 if s[4:] < b[4:] else 0)
        if 0 <= years < 130:
            age = str(years)
    return f"{age} {row.patient_sex or '-'}"


def triggers(row: WorklistRow) -> list[str]:
    """Why the study is on the worklist: fracture grade >= 2, low density, red flag."""
    out = []
    if row.max_genant_grade is not None and row.max_genant_grade >= 2:
        out.append(f"fracture G{row.max_genant_grade}")
    if row.osteoporosis_suspected:
        out.append("low density")
    if row.red_flags:
        out.append("red flag")
    return out or [row.trigger]


def study_date(row: WorklistRow) -> str:
    d = row.study_date
    return f"{d[:4]}-{d[4:6]}-{d[6:]}" if len(d) == 8 else (d or "-")


#: DXA sites as the pages name them (the assessment's keys: ``clinical.assessment.SITE_ORDER``)
SITE_LABELS = {"lumbar_spine": "Lumbar spine", "femoral_neck": "Femoral neck",
               "total_hip": "Total hip", "radius_33": "33 % radius (forearm)"}


def site_label(site: object) -> str:
    return SITE_LABELS.get(str(site), str(site))


def words(value: object) -> str:
    """``low_bone_mass`` -> ``low bone mass``; None -> ``-``."""
    return "-" if value is None else str(value).replace("_", " ")


def score(value: object) -> str:
    """A T- or Z-score or a percentage with one decimal (``-2.7``); ``-`` when absent."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:.1f}"
    return "-"


def model_disclaimers(docs: Iterable[Mapping[str, Any] | None]) -> list[tuple[str, str]]:
    """The risk models' required disclaimers (e.g. ClinRisk's for QFracture) of the
    assessments on a page, each model's once, as (model, text)."""
    seen: dict[str, str] = {}
    for doc in docs:
        risk = (doc or {}).get("risk") or {}
        text = risk.get("disclaimer") if isinstance(risk, Mapping) else None
        if text:
            seen.setdefault(str(risk.get("model") or "risk model"), str(text))
    return list(seen.items())


def template_globals() -> dict[str, Any]:
    """What the templates call (the web application's and the static export's)."""
    return {"age_sex": age_sex, "triggers": triggers, "study_date": study_date,
            "site_label": site_label, "words": words, "score": score,
            "model_disclaimers": model_disclaimers}
