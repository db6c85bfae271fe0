"""Content items shared by the SR measurement groups: algorithm identification, a numeric
measurement, the "level name uncertain" evaluation and the source-image references."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import highdicom as hd
from highdicom.sr import CodedConcept

from osteo_node.exporters.codes import CodeBook
from osteo_node.exporters.common import ExportSettings
from osteo_node.pipeline.results import AnalysisResult
from osteo_node.pipeline.types import SourceInstance


def algorithm_id(result: AnalysisResult, settings: ExportSettings) -> hd.sr.AlgorithmIdentification:
    """Algorithm identification: the model (name, version, sha256) or the node itself."""
    model = result.model
    if model is None:
        return hd.sr.AlgorithmIdentification(name=settings.model_name,
                                             version=settings.software_version)
    return hd.sr.AlgorithmIdentification(
        name=model.name,
        version=model.version,
        parameters=[f"sha256={model.sha256}", f"execution_provider={model.execution_provider}",
                    f"osteo-node={settings.software_version}"],
    )


def measurement(name: CodedConcept, value: float, unit: CodedConcept,
                derivation: CodedConcept | None = None) -> hd.sr.Measurement:
    return hd.sr.Measurement(name=name, value=float(value), unit=unit, derivation=derivation)


def level_uncertain_evaluation(uncertain: bool, book: CodeBook) -> hd.sr.QualitativeEvaluation:
    """CODE "Vertebral level name uncertain" = Yes / No (the tracking identifier keeps the
    level name; this says whether that name is anchored to anatomy)."""
    return hd.sr.QualitativeEvaluation(book.concept("level_uncertain"),
                                       book.get("yes_no", "yes" if uncertain else "no").concept())


def source_images(kind: type, sources: Sequence[SourceInstance]) -> list[Any]:
    """References of ``kind`` (a highdicom source-image class) to the given slices."""
    return [kind(referenced_sop_class_uid=s.sop_class_uid,
                 referenced_sop_instance_uid=s.sop_instance_uid) for s in sources]
