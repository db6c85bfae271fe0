"""A list of FHIR resources -> one patient's :class:`ClinicalRecord`.

A malformed or partial resource never stops the mapping: it is skipped and a message says
which and why.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date

from osteo_node.clinical.dxa import from_fhir_resources
from osteo_node.clinical.fhir.condition import read_condition
from osteo_node.clinical.fhir.datatypes import Resource
from osteo_node.clinical.fhir.medication import read_medication
from osteo_node.clinical.fhir.observation import read_observation
from osteo_node.clinical.fhir.patient import read_patient
from osteo_node.clinical.record import ClinicalRecord


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
        read_patient(patients[0], rec, today)
    latest: dict[str, str] = {}
    handled = {"Patient", "Medication", "Bundle", "OperationOutcome"}
    for res in resources:
        rtype = str(res.get("resourceType"))
        rec.resource_counts[rtype] = rec.resource_counts.get(rtype, 0) + 1
        try:
            if rtype == "Condition":
                read_condition(res, rec)
            elif rtype in ("MedicationStatement", "MedicationRequest"):
                read_medication(res, rec, today, meds)
            elif rtype == "Observation":
                read_observation(res, rec, latest)
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
