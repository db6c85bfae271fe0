"""Stage timing shared by the analysers: report progress, record each stage's seconds."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, MutableMapping
from contextlib import contextmanager

Progress = Callable[[str, str], None]


@contextmanager
def timed_stage(timings: MutableMapping[str, float], progress: Progress | None, name: str,
                message: str = "") -> Iterator[None]:
    """Announce stage ``name`` through ``progress`` and store its wall time in ``timings``."""
    if progress is not None:
        progress(name, message)
    t0 = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = round(time.perf_counter() - t0, 3)
