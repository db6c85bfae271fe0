"""FHIR Condition -> condition concepts (``clinical_codes.yaml``) of a :class:`ClinicalRecord`.

A refuted or entered-in-error Condition is ignored.
"""

from __future__ import annotations

from collections.abc import Mapping

from osteo_node.clinical import codes
from osteo_node.clinical.fhir.datatypes import Resource, codings, display
from osteo_node.clinical.record import ClinicalRecord


def _is_refuted(res: Resource) -> bool:
    status = codings(res.get("verificationStatus"))
    if any(c.get("code") in ("refuted", "entered-in-error") for c in status):
        return True
    return any(c.get("code") in ("entered-in-error",) for c in codings(res.get("clinicalStatus")))


def read_condition(res: Resource, rec: ClinicalRecord) -> None:
    if _is_refuted(res):
        return
    concept = res.get("code")
    if concept is not None and not isinstance(concept, Mapping):
        raise TypeError("code is not a CodeableConcept")
    found = codes.concepts_for(codings(concept), "conditions")
    if not found and not codings(concept):
        rec.messages.append(f"Condition/{res.get('id', '?')}: no coded diagnosis; ignored")
    for name in found:
        rec.conditions.setdefault(name, []).append(display(concept))
        if name == "falls":
            rec.falls = True
