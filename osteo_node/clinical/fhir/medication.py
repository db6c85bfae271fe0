"""FHIR MedicationStatement / MedicationRequest -> :class:`MedicationExposure` entries.

The medication is coded inline or referenced (``Medication`` resources by reference); the daily
dose in mg comes from the dosage and its timing, the duration from the effective or validity
period (or the expected supply duration). An active course without an end runs until today.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Any

from osteo_node.clinical import codes
from osteo_node.clinical.fhir.datatypes import Resource, codings, num, parse_date
from osteo_node.clinical.record import ClinicalRecord, MedicationExposure


def _timing_per_day(dosage: Mapping[str, Any]) -> float | None:
    rep = ((dosage.get("timing") or {}).get("repeat")) or {}
    freq = num(rep.get("frequency", 1))
    period = num(rep.get("period", 1))
    unit = rep.get("periodUnit", "d")
    per_days = {"h": 1 / 24, "d": 1.0, "wk": 7.0, "mo": 30.4375, "a": 365.25}.get(str(unit))
    if freq is None or period is None or per_days is None or period <= 0:
        return None
    return freq / (period * per_days)


def _dose_mg(dosage: Mapping[str, Any]) -> float | None:
    for dr in dosage.get("doseAndRate") or []:
        q = dr.get("doseQuantity") if isinstance(dr, Mapping) else None
        if isinstance(q, Mapping):
            value = num(q.get("value"))
            unit = str(q.get("code") or q.get("unit") or "").lower()
            if value is None:
                return None
            if unit == "mg":
                return value
            if unit == "g":
                return value * 1000.0
            if unit in ("ug", "mcg", "µg"):
                return value / 1000.0
            return None
    return None


def _daily_dose_mg(dosages: Any) -> float | None:
    """The largest daily dose among the dosages that give both dose and timing."""
    daily: float | None = None
    for d in dosages or []:
        if isinstance(d, Mapping):
            dose, per_day = _dose_mg(d), _timing_per_day(d)
            if dose is not None and per_day is not None:
                daily = max(daily or 0.0, dose * per_day)
    return daily


def _statement_period(res: Resource) -> tuple[date | None, date | None]:
    period = res.get("effectivePeriod") or {}
    start = parse_date(period.get("start")) or parse_date(res.get("effectiveDateTime"))
    return start, parse_date(period.get("end"))


def _request_period(res: Resource) -> tuple[date | None, date | None]:
    dispense = res.get("dispenseRequest") or {}
    validity = dispense.get("validityPeriod") or {}
    start = parse_date(validity.get("start")) or parse_date(res.get("authoredOn"))
    end = parse_date(validity.get("end"))
    supply = dispense.get("expectedSupplyDuration") or {}
    days = num(supply.get("value"))
    if end is None and days is not None and start is not None:
        unit = str(supply.get("code") or supply.get("unit") or "d")
        scale = {"d": 1, "day": 1, "days": 1, "wk": 7, "mo": 30.4375, "a": 365.25}
        end = date.fromordinal(start.toordinal() + int(days * scale.get(unit, 1)))
    return start, end


def _months_between(start: date | None, end: date | None) -> float | None:
    if start is None or end is None or end < start:
        return None
    return (end - start).days / 30.4375


def read_medication(
    res: Resource, rec: ClinicalRecord, today: date, meds: Mapping[str, Resource]
) -> None:
    """Add the exposures of one MedicationStatement or MedicationRequest; ``meds`` maps
    ``Medication/[id]`` and ``[id]`` to the Medication resources at hand."""
    rtype = str(res.get("resourceType"))
    rid = f"{rtype}/{res.get('id', '?')}"
    status = str(res.get("status", ""))
    if status in ("entered-in-error", "not-taken", "cancelled"):
        return
    concept = res.get("medicationCodeableConcept")
    ref = (res.get("medicationReference") or {}).get("reference")
    if concept is None and isinstance(ref, str):
        target = meds.get(ref) or meds.get(ref.lstrip("#"))
        concept = (target or {}).get("code")
        if concept is None:
            rec.messages.append(f"{rid}: medicationReference {ref} not resolvable; ignored")
            return
    med_codings = codings(concept)
    if not med_codings:
        rec.messages.append(f"{rid}: no coded medication; ignored")
        return
    found = codes.concepts_for(med_codings, "medications")
    if not found:
        return
    statement = rtype == "MedicationStatement"
    daily = _daily_dose_mg(res.get("dosage") if statement else res.get("dosageInstruction"))
    start, end = _statement_period(res) if statement else _request_period(res)
    active = status in ("active", "intended", "on-hold", "")
    if end is None and active:
        end = today
    duration = _months_between(start, end)
    for name in found:
        ingredient = codes.ingredient(med_codings, name)
        rec.medications.setdefault(name, []).append(
            MedicationExposure(name, ingredient, daily, duration, active, rid)
        )
