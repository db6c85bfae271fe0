"""Shared fixtures: location of the real imaging data in ../shared/data.

Tests that need it skip with a reason when it is absent (a user's clone will not have it).
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

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


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    """The node's log as JSON lines in memory (configured like ``serve`` does)."""
    from osteo_node import logging_setup

    stream = io.StringIO()
    logging_setup.configure("INFO", json=True, stream=stream)
    yield stream
    logging_setup.configure("INFO")


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    """Tests that run ``cli.main()`` point structlog at their captured stderr; reset it after
    each test so later tests never log to a closed stream."""
    yield
    structlog.reset_defaults()
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
