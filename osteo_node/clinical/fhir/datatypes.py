"""Lenient readers for FHIR data types (CodeableConcept, date, number) in parsed JSON.

Each returns an empty list or ``None`` for a missing or malformed value instead of raising.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

Resource = Mapping[str, Any]


def codings(concept: Any) -> list[Mapping[str, Any]]:
    if not isinstance(concept, Mapping):
        return []
    return [c for c in concept.get("coding") or [] if isinstance(c, Mapping)]


def display(concept: Any) -> str:
    if not isinstance(concept, Mapping):
        return "?"
    for c in codings(concept):
        if c.get("display"):
            return str(c["display"])
    return str(concept.get("text") or "?")


def parse_date(value: Any) -> date | None:
    """A FHIR date or dateTime; a year alone is read as 1 July, a year-month as the 15th."""
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


def num(value: Any) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None
