"""Clinical constants as data, each with its cited source, in one place.

Every YAML file here holds thresholds, cut-offs, categories or coefficients together with the
publication they come from (``source`` keys). Code reads them through :func:`load`; no clinical
number is written into code.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

import yaml


@cache
def load(name: str) -> dict[str, Any]:
    """Load ``<name>.yaml`` from this package (cached, read-only by convention)."""
    text = resources.files(__package__).joinpath(f"{name}.yaml").read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ValueError(f"clinical data file {name}.yaml must hold a mapping")
    return data
