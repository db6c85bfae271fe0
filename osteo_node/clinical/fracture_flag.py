"""Genant grades from which an imaging vertebral fracture is acted on.

The single source is ``clinical_data/vertebral_fracture.yaml`` (cited there). The PACS key-image
flag (KOS), the FLS worklist's "positive" trigger and the risk model's imaging input read these
functions instead of holding their own numbers.
"""

from __future__ import annotations

from osteo_node.clinical_data import load


def _grade(key: str) -> int:
    value = int(load("vertebral_fracture")[key]["value"])
    if not 1 <= value <= 3:
        raise ValueError(f"vertebral_fracture.yaml {key} must be a Genant grade 1..3, got {value}")
    return value


def flag_min_genant_grade() -> int:
    """Lowest grade that flags a result (KOS "Of Interest", FLS worklist "positive")."""
    return _grade("flag_min_genant_grade")


def risk_prior_fracture_min_genant_grade() -> int:
    """Lowest grade counted as a prevalent vertebral fracture by the fracture-risk model."""
    return _grade("risk_prior_fracture_min_genant_grade")
