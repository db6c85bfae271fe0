"""Environment overrides of the YAML configuration (``OSTEO_NODE__SECTION__KEY=value``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

ENV_PREFIX = "OSTEO_NODE__"


def apply_env_overrides(raw: dict[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    """Return a copy of ``raw`` with ``OSTEO_NODE__SECTION__KEY=value`` variables applied.

    Keys are lower-cased path segments separated by ``__`` (``OSTEO_NODE__DICOM__PORT=11113``
    sets ``dicom.port``). Values are parsed as YAML scalars/flow collections, so
    ``OSTEO_NODE__DICOM__ACCEPTED_MODALITIES='[CT, MR]'`` gives a list.
    """
    out: dict[str, Any] = _deep_copy(raw)
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX):
            continue
        path = [p.lower() for p in name[len(ENV_PREFIX):].split("__") if p]
        if not path:
            continue
        node = out
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[path[-1]] = yaml.safe_load(env[name]) if env[name] != "" else ""
    return out


def _deep_copy(raw: Any) -> Any:
    if isinstance(raw, dict):
        return {k: _deep_copy(v) for k, v in raw.items()}
    if isinstance(raw, list):
        return [_deep_copy(v) for v in raw]
    return raw
