"""Which analysis results put a patient on the FLS worklist (rules in
``dicom_sr_templates/fls_worklist.yaml``, with their sources; the "positive" Genant grade comes
from ``clinical_data/vertebral_fracture.yaml``, shared with the KOS flag, unless the rules file
sets ``positive_min_grade``)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

import yaml

from osteo_node.clinical.fracture_flag import flag_min_genant_grade
from osteo_node.exporters.codes import templates_dir
from osteo_node.exporters.common import density_level, level_caveat, vertebra_level
from osteo_node.pipeline.results import AnalysisResult

Trigger = Literal["positive", "review"]


@dataclass(frozen=True)
class FlsRules:
    positive_min_grade: int
    review_grade: int | None
    statuses: tuple[str, ...]
    #: the status a row nobody worked on gets when a later analysis is not positive
    withdrawn_status: str = "not_indicated"

    def __post_init__(self) -> None:
        if not 1 <= self.positive_min_grade <= 3:
            raise ValueError("positive_min_grade must be 1..3")
        if self.review_grade is not None and not 1 <= self.review_grade < self.positive_min_grade:
            raise ValueError("review_grade must be below positive_min_grade")
        if not self.statuses or self.statuses[0] != "new":
            raise ValueError("statuses must start with 'new'")
        if self.withdrawn_status not in self.statuses:
            raise ValueError("withdrawn_status must be one of the statuses")


@cache
def load_rules(path: Path | None = None) -> FlsRules:
    data = yaml.safe_load((path or templates_dir() / "fls_worklist.yaml").read_text("utf-8"))
    review = data.get("review_grade")
    positive = data.get("positive_min_grade")
    return FlsRules(positive_min_grade=flag_min_genant_grade() if positive is None
                    else int(positive),
                    review_grade=None if review is None else int(review),
                    statuses=tuple(str(s) for s in data["statuses"]),
                    withdrawn_status=str(data.get("withdrawn_status", "not_indicated")))


def max_grade(result: AnalysisResult) -> int | None:
    grades = [v.genant_grade for v in result.vertebrae if v.genant_grade is not None]
    if result.findings is not None and result.findings.max_genant_grade is not None:
        grades.append(result.findings.max_genant_grade)
    return max(grades) if grades else None


def classify(result: AnalysisResult, rules: FlsRules | None = None) -> Trigger | None:
    """"positive", "review" or None (no row) for an analysis result."""
    rules = rules or load_rules()
    if result.status != "analysed":
        return None
    grade = max_grade(result)
    suspected = bool(result.findings and result.findings.osteoporosis_suspected)
    if suspected or (grade is not None and grade >= rules.positive_min_grade):
        return "positive"
    if rules.review_grade is not None and grade is not None and grade >= rules.review_grade:
        return "review"
    return None


def summary(result: AnalysisResult, rules: FlsRules | None = None) -> str:
    """One line for a person: levels with their grade, density call; no patient data. Uncertain
    level names are shown as "L1?" and the level caveat ends the line."""
    rules = rules or load_rules()
    parts = []
    graded = [v for v in result.vertebrae
              if v.genant_grade is not None and v.genant_grade >= (rules.review_grade or
                                                                   rules.positive_min_grade)]
    if graded:
        parts.append("vertebral deformity " + ", ".join(
            f"{vertebra_level(v)} grade {v.genant_grade} {v.morphology}" for v in graded))
    f = result.findings
    if f is not None and f.l1_hu is not None and f.density_level:
        call = "osteoporosis suspected" if f.osteoporosis_suspected else "density not low"
        parts.append(f"{call} ({density_level(f)} {f.l1_hu:.0f} HU)")
    elif f is not None and f.osteoporosis_suspected:
        parts.append("osteoporosis suspected")
    line = "; ".join(parts) or "no finding"
    caveat = level_caveat(result) if parts else None
    return f"{line}. {caveat}" if caveat else line
