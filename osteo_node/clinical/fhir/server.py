"""HTTP client for a FHIR R4 server (urllib, JSON): one patient's resources, following pages.

Reads ``[base]/Patient/[id]`` plus ``Condition``, ``MedicationStatement``,
``MedicationRequest`` (with their ``Medication``) and ``Observation`` searches by patient,
following ``next`` links. A failed Patient read is a :class:`FhirIntakeError`; a failed search
only loses that resource type and says so in the returned messages. With a bearer ``token`` every
request carries ``Authorization: Bearer <token>`` (SMART backend services or a token issued by
the EHR); a 401/403 says the token was refused. The token is never logged.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

from osteo_node.clinical.dxa import iter_fhir_resources
from osteo_node.clinical.fhir.datatypes import Resource
from osteo_node.clinical.fhir.errors import FhirIntakeError

SEARCHED_TYPES = ("Condition", "MedicationStatement", "MedicationRequest", "Observation")


def _get_json(url: str, timeout: float, token: str | None = None) -> dict[str, Any]:
    headers = {"Accept": "application/fhir+json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # scheme checked by caller
        doc = json.loads(resp.read().decode("utf-8"))
    if not isinstance(doc, dict):
        raise ValueError("response is not a JSON object")
    return doc


def _search(
    base: str, rtype: str, patient_id: str, *, timeout: float, max_pages: int,
    messages: list[str], token: str | None = None,
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
            bundle = _get_json(url, timeout, token)
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


def fetch_patient_resources(
    base_url: str, patient_id: str, *, timeout: float, max_pages: int, token: str | None = None,
) -> tuple[list[Resource], list[str]]:
    """The Patient and its searched resources, and messages about what could not be read."""
    parsed = urllib.parse.urlparse(base_url)
    if parsed.scheme not in ("http", "https"):
        raise FhirIntakeError(f"FHIR base URL must be http(s), got {base_url!r}")
    base = base_url.rstrip("/")
    quoted = urllib.parse.quote(patient_id, safe="")
    messages: list[str] = []
    try:
        patient = _get_json(f"{base}/Patient/{quoted}", timeout, token)
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            raise FhirIntakeError(
                f"FHIR server refused the credentials (HTTP {exc.code}): "
                + ("check the bearer token" if token else "it needs a bearer token "
                   "(--fhir-token-file)")) from exc
        if exc.code == 404:
            raise FhirIntakeError(f"FHIR server: Patient {patient_id!r} not found (404)") from exc
        raise FhirIntakeError(f"FHIR server: Patient read failed, HTTP {exc.code}") from exc
    except (urllib.error.URLError, TimeoutError, ValueError) as exc:
        raise FhirIntakeError(f"FHIR server {base} not reachable: {exc}") from exc
    resources: list[Resource] = [patient]
    for rtype in SEARCHED_TYPES:
        resources.extend(
            _search(base, rtype, quoted, timeout=timeout, max_pages=max_pages, messages=messages,
                    token=token)
        )
    return resources, messages
