"""From an analysis output to queued outbox items (the seam between worker and exporters).

A :data:`Publisher` turns an :class:`AnalysisOutput` into ``(kind, Dataset)`` pairs. The key
the result UIDs derive from (:func:`content_key`) is the job (series, generation) AND what made
the result: the set of source instances, the model and the software version. A re-run of the
same job gives the same SOP Instance UIDs (the outbox, idempotent per UID, sends nothing twice);
different content (another node, a rebuilt database, a new model) never reuses a UID.
:func:`enqueue_objects` hands them to the outbox.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from pathlib import Path

from pydicom.dataset import Dataset
from sqlalchemy import Engine

from osteo_node.config.settings import ResultsSettings
from osteo_node.outbox.policy import Destination
from osteo_node.pipeline.results import AnalysisOutput

KindedObject = tuple[str, Dataset]
Publisher = Callable[[AnalysisOutput, str, ResultsSettings], Sequence[KindedObject]]


def content_key(job_key: str, output: AnalysisOutput) -> str:
    """``job_key`` plus a digest of the source SOP Instance UIDs, the model's sha256 and the
    osteo-node version."""
    import hashlib

    from osteo_node import __version__

    volume, result = output.volume, output.result
    sources = sorted(s.sop_instance_uid for s in volume.sources) if volume is not None else []
    model = result.model.sha256 if result.model is not None else "no-model"
    digest = hashlib.sha256("\n".join([*sources, model, __version__]).encode()).hexdigest()
    return f"{job_key}/{digest[:20]}"


def exporters_publisher(output: AnalysisOutput, job_key: str,
                        settings: ResultsSettings) -> list[KindedObject]:
    """The built-in exporters (SR, SEG, SC, KOS as applicable)."""
    from osteo_node.exporters.publish import BuildOptions, build_objects

    objects = build_objects(output, uid_root=settings.uid_root, job_key=job_key,
                            options=BuildOptions(institution_name=settings.institution_name))
    return [(o.kind, o.dataset) for o in objects]


def resolve_publisher(spec: str) -> Publisher:
    """Import a ``"module:callable"`` publisher."""
    module_name, _, attr = spec.partition(":")
    fn = getattr(importlib.import_module(module_name), attr)
    if not callable(fn):
        raise TypeError(f"publisher {spec} is not callable")
    publisher: Publisher = fn
    return publisher


def enqueue_objects(engine: Engine, outbox_dir: Path, destinations: Sequence[Destination],
                    objects: Sequence[KindedObject], job_id: int) -> int:
    """Put the objects into the persisted outbox for every destination taking their kind."""
    if not objects or not destinations:
        return 0
    from osteo_node.outbox.store import enqueue

    n = 0
    for kind in sorted({k for k, _ in objects}):
        batch = [ds for k, ds in objects if k == kind]
        enqueue(engine, outbox_dir, batch, destinations, job_id=job_id, kind=kind)
        n += len(batch)
    return n
