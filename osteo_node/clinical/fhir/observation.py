"""FHIR Observation -> labs, BMI, smoking, alcohol and observed conditions of a record.

Codes and units map through ``clinical_codes.yaml``; values are converted to the unit listed
there. Per kind, the most recent Observation wins.
"""

from __future__ import annotations

from osteo_node.clinical import codes
from osteo_node.clinical.fhir.datatypes import Resource, codings, display, num
from osteo_node.clinical.record import ClinicalRecord, LabValue


def _convert(kind: str, value: float, unit: str | None) -> tuple[float | None, str | None]:
    table = codes.table()
    target = table["observations"][kind].get("unit")
    if target is None or unit is None or unit == target:
        return value, unit if unit is not None else target
    factor = table["unit_conversions"].get(f"{unit}->{target}@{kind}")
    if factor is None:
        return None, unit
    return value * float(factor), str(target)


def _obs_when(res: Resource) -> str:
    return str(res.get("effectiveDateTime") or (res.get("effectivePeriod") or {}).get("start")
               or res.get("issued") or "")


def _add_observed_conditions(res: Resource, rec: ClinicalRecord) -> None:
    """A condition coded as an Observation (e.g. SNOMED "history of falls") unless answered no."""
    no_codes = {str(c) for c in codes.table()["negative_answer_codes"]}
    negated = res.get("valueBoolean") is False or any(
        str(c.get("code")) in no_codes for c in codings(res.get("valueCodeableConcept"))
    )
    for name in [] if negated else codes.concepts_for(codings(res.get("code")), "conditions"):
        rec.conditions.setdefault(name, []).append(display(res.get("code")))
        if name == "falls":
            rec.falls = True


def _read_smoking(res: Resource, rec: ClinicalRecord, rid: str) -> bool:
    """Set the smoking category; False (and a message) when the value is not recognised."""
    table = codes.table()["smoking_values"]
    for c in codings(res.get("valueCodeableConcept")):
        if str(c.get("code")) in table:
            rec.smoking_category = table[str(c.get("code"))]
            return True
    rec.messages.append(f"{rid}: smoking status value not recognised; smoking unknown")
    return False


def read_observation(res: Resource, rec: ClinicalRecord, latest: dict[str, str]) -> None:
    """Add one Observation; ``latest`` (kind -> when) is shared across a patient's Observations."""
    if res.get("status") in ("entered-in-error", "cancelled"):
        return
    _add_observed_conditions(res, rec)
    kind = codes.observation_kind(codings(res.get("code")))
    if kind is None:
        return
    when = _obs_when(res)
    if kind in latest and latest[kind] > when:
        return  # keep the most recent value
    rid = f"Observation/{res.get('id', '?')}"
    if kind == "smoking_status":
        if _read_smoking(res, rec, rid):
            latest[kind] = when
        return
    vq = res.get("valueQuantity") or {}
    raw = num(vq.get("value"))
    unit = vq.get("code") or vq.get("unit")
    interp = next((str(c.get("code")) for ic in res.get("interpretation") or []
                   for c in codings(ic)), None)
    text = res.get("valueString") or display(res.get("valueCodeableConcept")) \
        if res.get("valueString") or res.get("valueCodeableConcept") else None
    if raw is None and text is None and interp is None:
        rec.messages.append(f"{rid} ({kind}): no usable value; ignored")
        return
    value: float | None = None
    if raw is not None:
        value, unit = _convert(kind, raw, str(unit) if unit else None)
        if value is None:
            rec.messages.append(f"{rid} ({kind}): unit {unit!r} not convertible; ignored")
            return
    latest[kind] = when
    if kind == "bmi":
        rec.bmi = value
    elif kind == "alcohol_units_per_day" and value is not None:
        bounds = codes.table()["alcohol_units_upper_bounds"]
        rec.alcohol_category = sum(1 for b in bounds if value >= float(b))
    rr = (res.get("referenceRange") or [{}])[0] or {}
    rec.labs[kind] = LabValue(
        kind, value, str(unit) if unit else None,
        num((rr.get("low") or {}).get("value")), num((rr.get("high") or {}).get("value")),
        when or None, interp, str(text) if text else None,
    )
