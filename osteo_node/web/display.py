"""How worklist values read on the pages (pure functions, used by the templates)."""

from __future__ import annotations

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
