"""Clinical data intake from FHIR R4: a Bundle file or a FHIR server (urllib, JSON).

Maps Patient, Condition, MedicationStatement / MedicationRequest and Observation resources
through ``clinical_data/clinical_codes.yaml`` into a :class:`ClinicalRecord`. A malformed or
partial resource never stops the intake: it is skipped and a message says which and why.

The entry points are here; the parts are in :mod:`osteo_node.clinical.fhir` (resource mapping,
server client) and :mod:`osteo_node.clinical.record` (the record types).
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import structlog

from osteo_node.clinical.dxa import iter_fhir_resources
from osteo_node.clinical.fhir.errors import FhirIntakeError
from osteo_node.clinical.fhir.server import fetch_patient_resources
from osteo_node.clinical.fhir.to_record import record_from_resources
from osteo_node.clinical.record import ClinicalRecord

__all__ = [
    "ClinicalRecord",
    "FhirIntakeError",
    "fetch_from_server",
    "load_bundle_file",
    "record_from_resources",
]

log = structlog.get_logger(__name__)


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


def fetch_from_server(
    base_url: str, patient_id: str, timeout: float = 10.0, max_pages: int = 20,
    today: date | None = None, token: str | None = None,
) -> ClinicalRecord:
    """Read one patient's resources from a FHIR R4 server (``[base]/Patient/[id]`` plus
    ``Condition``, ``MedicationStatement``, ``MedicationRequest``, ``Medication`` and
    ``Observation`` searches by patient, following ``next`` links)."""
    resources, messages = fetch_patient_resources(
        base_url, patient_id, timeout=timeout, max_pages=max_pages, token=token
    )
    log.info("fhir_fetch", resources=len(resources), problems=len(messages))
    rec = record_from_resources(resources, None, today)
    rec.messages[:0] = messages
    return rec
