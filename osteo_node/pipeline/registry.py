"""The analyser registry: the single place that says which analyser handles which modality.

The node's worker and ``osteo-node analyze`` both look analysers up here. A modality with no
registered analyser yields ``None`` and the job ends with status "no analyser", never a fake
result.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from osteo_node.pipeline.results import AnalysisOutput


class Analyser(Protocol):
    """Analyses one series given as the paths of its stored DICOM instances (or one NIfTI)."""

    name: str

    def analyse(self, paths: Sequence[Path]) -> AnalysisOutput: ...


AnalyserFactory = Callable[[], Analyser]


@dataclass(frozen=True)
class RegistryEntry:
    modality: str
    factory_path: str  # "module:callable" resolved lazily, so importing the registry is cheap


# modality -> analyser factory. Filled as analysers land (CT: issue 2, MR: issue 4).
REGISTRY: dict[str, RegistryEntry] = {
    "CT": RegistryEntry("CT", "osteo_node.pipeline.ct.analyser:create"),
    "MR": RegistryEntry("MR", "osteo_node.pipeline.mr.analyser:create"),
}


def analyser_for(modality: str) -> Analyser | None:
    """Instantiate the analyser registered for ``modality`` or return None."""
    entry = REGISTRY.get(modality.upper())
    if entry is None:
        return None
    import importlib

    module_name, _, attr = entry.factory_path.partition(":")
    factory: AnalyserFactory = getattr(importlib.import_module(module_name), attr)
    return factory()


def supported_modalities() -> tuple[str, ...]:
    return tuple(sorted(REGISTRY))
