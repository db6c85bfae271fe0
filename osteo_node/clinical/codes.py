"""Match FHIR codings against the concept tables in ``clinical_data/clinical_codes.yaml``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from osteo_node.clinical_data import load

Coding = Mapping[str, Any]


def table() -> dict[str, Any]:
    return load("clinical_codes")


def system_kind(system: str | None) -> str | None:
    """Map a FHIR coding system URI to 'snomed', 'icd10', 'atc', 'rxnorm' or 'loinc'."""
    if not system:
        return None
    s = system.rstrip("/").lower()
    for kind, uris in table()["systems"].items():
        options = uris if isinstance(uris, list) else [uris]
        if any(s == str(u).rstrip("/").lower() for u in options):
            return str(kind)
    return None


def _matches(kind: str, code: str, entries: Iterable[str]) -> bool:
    code = code.strip().upper()
    if kind in ("icd10", "atc"):  # hierarchical: prefix match, dots ignored for ICD-10
        plain = code.replace(".", "")
        return any(plain.startswith(str(e).upper().replace(".", "")) for e in entries)
    return any(code == str(e).upper() for e in entries)


def concepts_for(codings: Iterable[Coding], section: str) -> list[str]:
    """Names of the concepts in ``section`` ('conditions' or 'medications') that match."""
    found: list[str] = []
    codings = list(codings)
    for name, entry in table()[section].items():
        for c in codings:
            kind = system_kind(c.get("system"))
            code = c.get("code")
            if kind is None or not isinstance(code, str) or kind not in entry:
                continue
            entries = entry[kind]
            keys = entries.keys() if isinstance(entries, dict) else entries
            if _matches(kind, code, keys):
                found.append(str(name))
                break
    return found


def observation_kind(codings: Iterable[Coding]) -> str | None:
    """Name of the observation concept (e.g. 'bmi', 'alp') a LOINC coding denotes."""
    for c in codings:
        if system_kind(c.get("system")) != "loinc":
            continue
        for name, entry in table()["observations"].items():
            if str(c.get("code")) in entry["loinc"]:
                return str(name)
    return None


def ingredient(codings: Iterable[Coding], medication: str) -> str | None:
    """Ingredient name of a medication concept from RxNorm or a full ATC code, if coded."""
    entry = table()["medications"][medication]
    for c in codings:
        kind = system_kind(c.get("system"))
        code = str(c.get("code", ""))
        if kind == "rxnorm" and code in entry.get("rxnorm", {}):
            return str(entry["rxnorm"][code])
        if kind == "atc" and code.upper() in entry.get("atc_ingredient", {}):
            return str(entry["atc_ingredient"][code.upper()])
    for c in codings:  # free-text display as last resort for the ingredient name only
        display = str(c.get("display", "")).lower()
        for name in entry.get("prednisolone_equivalent_factor", {}):
            if name in display:
                return str(name)
    return None
