"""FHIR Patient -> sex and age of a :class:`ClinicalRecord`."""

from __future__ import annotations

from datetime import date

from osteo_node.clinical.fhir.datatypes import Resource, parse_date
from osteo_node.clinical.record import ClinicalRecord


def _age(birth: date, today: date) -> float:
    years = today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))
    return float(years)


def read_patient(res: Resource, rec: ClinicalRecord, today: date) -> None:
    gender = res.get("gender")
    if gender in ("female", "male"):
        rec.sex = str(gender)
    elif gender is not None:
        rec.messages.append(
            f"Patient: gender {gender!r} cannot select a sex-specific model; sex treated as "
            "missing"
        )
    birth = parse_date(res.get("birthDate"))
    if birth is None:
        rec.messages.append("Patient: birthDate missing or invalid; age unknown")
    else:
        rec.age = _age(birth, today)
