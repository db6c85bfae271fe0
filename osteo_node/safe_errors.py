"""Describing a failure without patient data.

Exception messages from DICOM libraries quote header values (pydicom: ``Invalid value for VR
DA: '1951-03-09'``; highdicom: ``Unable to convert ... to 'DA'``), and tracebacks repeat them.
Whatever may reach a log, a job record or ``status`` goes through :func:`describe`: the
exception type and where it was raised (file, line, function: code, never data).
"""

from __future__ import annotations

import traceback
from pathlib import PurePath

PACKAGE = "osteo_node"


def _where(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return ""
    ours = [f for f in frames if PACKAGE in PurePath(f.filename).parts]
    frame = ours[-1] if ours else frames[-1]
    parts = PurePath(frame.filename).parts
    short = "/".join(parts[parts.index(PACKAGE) + 1:]) if PACKAGE in parts else parts[-1]
    origin = frames[-1]
    inner = "" if origin is frame else f" via {PurePath(origin.filename).name}:{origin.lineno}"
    return f" in {short}:{frame.lineno} ({frame.name}){inner}"


def describe(exc: BaseException) -> str:
    """``"ValueError in exporters/seg.py:120 (build) via valuerep.py:411"``: no message."""
    return f"{type(exc).__name__}{_where(exc)}"
