"""Fixtures for the clinical tests."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import structlog


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """The CLI configures structlog onto the (captured, later closed) stderr; undo that so
    later tests do not log into a closed stream."""
    handlers = list(logging.getLogger().handlers)
    level = logging.getLogger().level
    yield
    structlog.reset_defaults()
    logging.getLogger().handlers[:] = handlers
    logging.getLogger().setLevel(level)
