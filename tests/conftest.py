"""Shared fixtures: location of the real imaging data in ../shared/data.

Tests that need it skip with a reason when it is absent (a user's clone will not have it).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def shared_data_dir() -> Path:
    return Path(os.environ.get("OSTEO_SHARED_DATA", REPO.parent / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = shared_data_dir()
    if not (root / "README.md").is_file():
        pytest.skip(f"real imaging data not found at {root} (set OSTEO_SHARED_DATA)")
    return root


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Folder for test artefacts a person may want to look at (PNG overlays, DICOM outputs)."""
    d = REPO / "test-artifacts"
    d.mkdir(exist_ok=True)
    return d
