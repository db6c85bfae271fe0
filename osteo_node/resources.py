"""Where the node finds the data it ships beside the code: the ONNX models (``ai_models/``), the
DICOM/FHIR code tables (``dicom_sr_templates/``) and the series-selection rules (``config/``).

Looked up in this order:
1. an environment variable naming the folder (deployments that keep models elsewhere);
2. the source tree (a git checkout or an editable install: ``<repo>/<relative>``);
3. the installed data (``<sys.prefix>/share/osteo-node/<relative>``, written by a wheel install,
   see ``[tool.setuptools.data-files]`` in pyproject.toml).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

SOURCE_ROOT = Path(__file__).resolve().parents[1]
INSTALLED_ROOT = Path(sys.prefix) / "share" / "osteo-node"


def resource_path(relative: str, env: str | None = None,
                  environ: Mapping[str, str] = os.environ) -> Path:
    """The folder or file ``relative`` (e.g. ``"ai_models/ct_vertebrae"``); see module doc.

    Returns the source-tree path when nothing exists anywhere, so error messages name a path.
    """
    if env and environ.get(env):
        return Path(environ[env])
    for root in (SOURCE_ROOT, INSTALLED_ROOT):
        candidate = root / relative
        if candidate.exists():
            return candidate
    return SOURCE_ROOT / relative
