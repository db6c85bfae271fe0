"""Clinical data intake from FHIR R4: a Bundle file or a FHIR server (urllib, JSON).

Maps Patient, Condition, MedicationStatement / MedicationRequest and Observation resources
through ``clinical_data/clinical_codes.yaml`` into a :class:`ClinicalRecord`. A malformed or
partial resource never stops the intake: it is skipped and a message says which and why.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import structlog

from osteo_node.clinical import codes
from osteo_node.clinical.dxa import DxaExam, from_fhir_resources, iter_fhir_resources

log = structlog.get_logger(__name__)

Resource = Mapping[str, Any]


class FhirIntakeError(RuntimeError):
    """The FHIR source could not be read at all (file missing, server unreachable)."""


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


# --------------------------------------------------------------------------- parsing helpers


def _codings(concept: Any) -> list[Mapping[str, Any]]:
    if not isinstance(concept, Mapping):
        return []
    return [c for c in concept.get("coding") or [] if isinstance(c, Mapping)]


def _display(concept: Any) -> str:
    if not isinstance(concept, Mapping):
        return "?"
    for c in _codings(concept):
        if c.get("display"):
            return str(c["display"])
    return str(concept.get("text") or "?")


def _parse_date(value: Any) -> date | None:
    if not isinstance(value, str) or len(value) < 4:
        return None
    text = value.strip()
    try:
        if len(text) == 4:
            return date(int(text), 7, 1)
        if len(text) == 7:
            return date(int(text[:4]), int(text[5:7]), 15)
        if len(text) == 10:
            return date.fromisoformat(text)
        return datetime.fromisoformat(text.replace("Z", "+00:00")).date()
    except ValueError:
        return None


def _age(birth: date, today: date) -> float:
    years = today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))
    return float(years)


def _num(value: Any) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _convert(kind: str, value: float, unit: str | None) -> tuple[float | None, str | None]:
    table = codes.table()
    target = table["observations"][kind].get("unit")
    if target is None or unit is None or unit == target:
        return value, unit if unit is not None else target
    factor = table["unit_conversions"].get(f"{unit}->{target}@{kind}")
    if factor is None:
        return None, unit
    return value * float(factor), str(target)


# --------------------------------------------------------------------------- resource handlers


def _patient(res: Resource, rec: ClinicalRecord, today: date) -> None:
    gender = res.get("gender")
    if gender in ("female", "male"):
        rec.sex = str(gender)
    elif gender is not None:
        rec.messages.append(
            f"Patient: gender {gender!r} cannot select a sex-specific model; sex treated as "
            "missing"
        )
    birth = _parse_date(res.get("birthDate"))
    if birth is None:
        rec.messages.append("Patient: birthDate missing or invalid; age unknown")
    else:
        rec.age = _age(birth, today)


def _is_refuted(res: Resource) -> bool:
    status = _codings(res.get("verificationStatus"))
    if any(c.get("code") in ("refuted", "entered-in-error") for c in status):
        return True
    return any(c.get("code") in ("entered-in-error",) for c in _codings(res.get("clinicalStatus")))


def _condition(res: Resource, rec: ClinicalRecord) -> None:
    if _is_refuted(res):
        return
    concept = res.get("code")
    if concept is not None and not isinstance(concept, Mapping):
        raise TypeError("code is not a CodeableConcept")
    found = codes.concepts_for(_codings(concept), "conditions")
    if not found and not _codings(concept):
        rec.messages.append(f"Condition/{res.get('id', '?')}: no coded diagnosis; ignored")
    for name in found:
        rec.conditions.setdefault(name, []).append(_display(concept))
        if name == "falls":
            rec.falls = True


def _timing_per_day(dosage: Mapping[str, Any]) -> float | None:
    rep = ((dosage.get("timing") or {}).get("repeat")) or {}
    freq = _num(rep.get("frequency", 1))
    period = _num(rep.get("period", 1))
    unit = rep.get("periodUnit", "d")
    per_days = {"h": 1 / 24, "d": 1.0, "wk": 7.0, "mo": 30.4375, "a": 365.25}.get(str(unit))
    if freq is None or period is None or per_days is None or period <= 0:
        return None
    return freq / (period * per_days)


def _dose_mg(dosage: Mapping[str, Any]) -> float | None:
    for dr in dosage.get("doseAndRate") or []:
        q = dr.get("doseQuantity") if isinstance(dr, Mapping) else None
        if isinstance(q, Mapping):
            value = _num(q.get("value"))
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


def _months_between(start: date | None, end: date | None) -> float | None:
    if start is None or end is None or end < start:
        return None
    return (end - start).days / 30.4375


def _medication(
    res: Resource, rec: ClinicalRecord, today: date, meds: Mapping[str, Resource]
) -> None:
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
    codings = _codings(concept)
    if not codings:
        rec.messages.append(f"{rid}: no coded medication; ignored")
        return
    found = codes.concepts_for(codings, "medications")
    if not found:
        return
    dosages = res.get("dosage") if rtype == "MedicationStatement" else res.get("dosageInstruction")
    daily: float | None = None
    for d in dosages or []:
        if isinstance(d, Mapping):
            dose, per_day = _dose_mg(d), _timing_per_day(d)
            if dose is not None and per_day is not None:
                daily = max(daily or 0.0, dose * per_day)
    start: date | None
    end: date | None
    if rtype == "MedicationStatement":
        period = res.get("effectivePeriod") or {}
        start = _parse_date(period.get("start")) or _parse_date(res.get("effectiveDateTime"))
        end = _parse_date(period.get("end"))
    else:
        dispense = res.get("dispenseRequest") or {}
        validity = dispense.get("validityPeriod") or {}
        start = _parse_date(validity.get("start")) or _parse_date(res.get("authoredOn"))
        end = _parse_date(validity.get("end"))
        supply = dispense.get("expectedSupplyDuration") or {}
        days = _num(supply.get("value"))
        if end is None and days is not None and start is not None:
            unit = str(supply.get("code") or supply.get("unit") or "d")
            scale = {"d": 1, "day": 1, "days": 1, "wk": 7, "mo": 30.4375, "a": 365.25}
            end = date.fromordinal(start.toordinal() + int(days * scale.get(unit, 1)))
    active = status in ("active", "intended", "on-hold", "")
    if end is None and active:
        end = today
    duration = _months_between(start, end)
    for name in found:
        ingredient = codes.ingredient(codings, name)
        rec.medications.setdefault(name, []).append(
            MedicationExposure(name, ingredient, daily, duration, active, rid)
        )


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


def _obs_when(res: Resource) -> str:
    return str(res.get("effectiveDateTime") or (res.get("effectivePeriod") or {}).get("start")
               or res.get("issued") or "")


def _observation(res: Resource, rec: ClinicalRecord, latest: dict[str, str]) -> None:
    if res.get("status") in ("entered-in-error", "cancelled"):
        return
    codings = _codings(res.get("code"))
    no_codes = {str(c) for c in codes.table()["negative_answer_codes"]}
    negated = res.get("valueBoolean") is False or any(
        str(c.get("code")) in no_codes for c in _codings(res.get("valueCodeableConcept"))
    )
    for name in [] if negated else codes.concepts_for(codings, "conditions"):
        # e.g. an Observation coded SNOMED "history of falls" with no negative value
        rec.conditions.setdefault(name, []).append(_display(res.get("code")))
        if name == "falls":
            rec.falls = True
    kind = codes.observation_kind(codings)
    if kind is None:
        return
    when = _obs_when(res)
    if kind in latest and latest[kind] > when:
        return  # keep the most recent value
    rid = f"Observation/{res.get('id', '?')}"
    if kind == "smoking_status":
        value_codes = _codings(res.get("valueCodeableConcept"))
        table = codes.table()["smoking_values"]
        for c in value_codes:
            if str(c.get("code")) in table:
                rec.smoking_category = table[str(c.get("code"))]
                latest[kind] = when
                return
        rec.messages.append(f"{rid}: smoking status value not recognised; smoking unknown")
        return
    vq = res.get("valueQuantity") or {}
    raw = _num(vq.get("value"))
    unit = vq.get("code") or vq.get("unit")
    interp = next((str(c.get("code")) for ic in res.get("interpretation") or []
                   for c in _codings(ic)), None)
    text = res.get("valueString") or _display(res.get("valueCodeableConcept")) \
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
        _num((rr.get("low") or {}).get("value")), _num((rr.get("high") or {}).get("value")),
        when or None, interp, str(text) if text else None,
    )


# --------------------------------------------------------------------------- entry points


def record_from_resources(
    resources: Iterable[Resource], patient_id: str | None = None, today: date | None = None
) -> ClinicalRecord:
    today = today or date.today()
    rec = ClinicalRecord()
    resources = [r for r in resources if isinstance(r, Mapping)]
    meds = {
        key: r for r in resources if r.get("resourceType") == "Medication"
        for key in (f"Medication/{r.get('id')}", str(r.get("id")))
    }
    patients = [r for r in resources if r.get("resourceType") == "Patient"]
    if patient_id is not None:
        patients = [p for p in patients if str(p.get("id")) == patient_id]
    if not patients:
        rec.messages.append("no Patient resource: age and sex unknown")
    elif len(patients) > 1:
        rec.messages.append(f"{len(patients)} Patient resources; the first is used")
    if patients:
        _patient(patients[0], rec, today)
    latest: dict[str, str] = {}
    handled = {"Patient", "Medication", "Bundle", "OperationOutcome"}
    for res in resources:
        rtype = str(res.get("resourceType"))
        rec.resource_counts[rtype] = rec.resource_counts.get(rtype, 0) + 1
        try:
            if rtype == "Condition":
                _condition(res, rec)
            elif rtype in ("MedicationStatement", "MedicationRequest"):
                _medication(res, rec, today, meds)
            elif rtype == "Observation":
                _observation(res, rec, latest)
            elif rtype not in handled:
                continue
        except (AttributeError, TypeError, ValueError, KeyError, IndexError) as exc:
            rec.messages.append(f"{rtype}/{res.get('id', '?')}: malformed ({exc}); skipped")
    _derive_bmi(rec)
    dxa = from_fhir_resources(resources, "fhir")
    rec.dxa = None if dxa.is_empty() else dxa
    return rec


def _derive_bmi(rec: ClinicalRecord) -> None:
    if rec.bmi is not None:
        return
    w, h = rec.labs.get("body_weight"), rec.labs.get("body_height")
    if w and h and w.value and h.value:
        rec.bmi = w.value / (h.value / 100.0) ** 2
        rec.messages.append(f"BMI derived from weight and height: {rec.bmi:.1f} kg/m2")


def load_bundle_file(
    path: Path, patient_id: str | None = None, today: date | None = None
) -> ClinicalRecord:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise FhirIntakeError(f"{path}: cannot read ({exc.strerror})") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FhirIntakeError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(doc, dict) or "resourceType" not in doc:
        raise FhirIntakeError(f"{path}: not a FHIR resource (no resourceType)")
    return record_from_resources(iter_fhir_resources(doc), patient_id, today)


# --------------------------------------------------------------------------- FHIR server


def _get_json(url: str, timeout: float) -> dict[str, Any]:
    req = urllib.request.Request(url, headers={"Accept": "application/fhir+json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # scheme checked by caller
        doc = json.loads(resp.read().decode("utf-8"))
    if not isinstance(doc, dict):
        raise ValueError("response is not a JSON object")
    return doc


def _search(
    base: str, rtype: str, patient_id: str, *, timeout: float, max_pages: int,
    messages: list[str],
) -> list[Resource]:
    params = {"patient": patient_id, "_count": "100"}
    if rtype.startswith("Medication"):
        params["_include"] = f"{rtype}:medication"
    query = urllib.parse.urlencode(params)
    url: str | None = f"{base}/{rtype}?{query}"
    out: list[Resource] = []
    pages = 0
    while url and pages < max_pages:
        try:
            bundle = _get_json(url, timeout)
        except urllib.error.HTTPError as exc:
            messages.append(f"{rtype} search failed: HTTP {exc.code}; {rtype} data missing")
            return out
        except (urllib.error.URLError, TimeoutError, ValueError) as exc:
            messages.append(f"{rtype} search failed ({exc}); {rtype} data missing")
            return out
        pages += 1
        out.extend(
            r for r in iter_fhir_resources(bundle) if r.get("resourceType") in (rtype, "Medication")
        )
        url = next((str(link.get("url")) for link in bundle.get("link") or []
                    if isinstance(link, Mapping) and link.get("relation") == "next"), None)
    if url:
        messages.append(f"{rtype}: more than {max_pages} pages; the rest was not read")
    return out


def fetch_from_server(
    base_url: str, patient_id: str, timeout: float = 10.0, max_pages: int = 20,
    today: date | None = None,
) -> ClinicalRecord:
    """Read one patient's resources from a FHIR R4 server (``[base]/Patient/[id]`` plus
    ``Condition``, ``MedicationStatement``, ``MedicationRequest``, ``Medication`` and
    ``Observation`` searches by patient, following ``next`` links)."""
    parsed = urllib.parse.urlparse(base_url)
    if parsed.scheme not in ("http", "https"):
        raise FhirIntakeError(f"FHIR base URL must be http(s), got {base_url!r}")
    base = base_url.rstrip("/")
    quoted = urllib.parse.quote(patient_id, safe="")
    messages: list[str] = []
    try:
        patient = _get_json(f"{base}/Patient/{quoted}", timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise FhirIntakeError(f"FHIR server: Patient {patient_id!r} not found (404)") from exc
        raise FhirIntakeError(f"FHIR server: Patient read failed, HTTP {exc.code}") from exc
    except (urllib.error.URLError, TimeoutError, ValueError) as exc:
        raise FhirIntakeError(f"FHIR server {base} not reachable: {exc}") from exc
    resources: list[Resource] = [patient]
    for rtype in ("Condition", "MedicationStatement", "MedicationRequest", "Observation"):
        resources.extend(
            _search(base, rtype, quoted, timeout=timeout, max_pages=max_pages, messages=messages)
        )
    log.info("fhir_fetch", resources=len(resources), problems=len(messages))
    rec = record_from_resources(resources, None, today)
    rec.messages[:0] = messages
    return rec
