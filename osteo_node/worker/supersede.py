"""A later generation of a series supersedes the results of the earlier one (issue 16, 4).

The earlier results are found in the outbox (``outbox_objects.job_id`` is the id of the job
that made them): those of the newest earlier generation that published anything (each
publishing generation supersedes that one, so the chain covers all). The new SR gets them as
predecessors and a rejection note (:class:`osteo_node.exporters.supersede.RejectionNote`) goes
to every destination that was given any of them, whatever kinds it takes. A generation that
publishes nothing (not analysable) supersedes nothing: the earlier results stay.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import structlog
from pydicom.dataset import Dataset
from sqlalchemy import Engine, select

from osteo_node.exporters.supersede import PriorObject, RejectionNote, with_predecessors
from osteo_node.exporters.uids import UidFactory
from osteo_node.outbox.policy import Destination
from osteo_node.outbox.tables import outbox_items, outbox_objects
from osteo_node.queue.jobs import ClaimedJob, jobs

log = structlog.get_logger(__name__)

KindedObject = tuple[str, Dataset]


def rejection_job_id(job_id: int) -> str:
    """The outbox ``job_id`` of a job's rejection note (never the plain id: a note is not a
    result that a later generation would reject again)."""
    return f"{job_id}/rejection"


def prior_objects(engine: Engine, job: ClaimedJob) -> list[PriorObject]:
    """The result objects of the newest earlier generation of ``job``'s series that has any."""
    with engine.connect() as conn:
        earlier = conn.execute(
            select(jobs.c.id).where(jobs.c.series_id == job.series_id,
                                    jobs.c.generation < job.generation)
            .order_by(jobs.c.generation.desc())).scalars().all()
        for job_id in earlier:
            rows = conn.execute(select(
                outbox_objects.c.kind, outbox_objects.c.sop_class_uid,
                outbox_objects.c.sop_instance_uid, outbox_objects.c.study_instance_uid,
                outbox_objects.c.series_instance_uid)
                .where(outbox_objects.c.job_id == str(job_id))).all()
            if rows:
                return [PriorObject(r.kind, r.sop_class_uid, r.sop_instance_uid,
                                    r.study_instance_uid or "", r.series_instance_uid or "")
                        for r in rows]
    return []


def destinations_given(engine: Engine, priors: Sequence[PriorObject]) -> set[str]:
    """Names of the destinations that had (or have pending) any of ``priors``."""
    uids = [p.sop_instance_uid for p in priors]
    with engine.connect() as conn:
        return set(conn.execute(select(outbox_items.c.destination).where(
            outbox_items.c.sop_instance_uid.in_(uids))).scalars())


def supersede(objects: Sequence[KindedObject], priors: Sequence[PriorObject], key: str
              ) -> tuple[list[KindedObject], Dataset | None]:
    """The new objects (the SR with its predecessors) and the rejection note of ``priors``
    (None when there is nothing to supersede or no new object to take the study from)."""
    if not priors or not objects:
        return list(objects), None
    out = [(kind, with_predecessors(ds, priors) if kind == "sr" else ds)
           for kind, ds in objects]
    template = next((ds for kind, ds in out if kind == "sr"), out[0][1])
    study = str(template.StudyInstanceUID)
    rejected = [p for p in priors if p.study_instance_uid == study]
    if not rejected:
        return out, None
    note = RejectionNote(template, rejected, UidFactory(key)).build()
    return out, note


def enqueue_rejection(engine: Engine, outbox_dir: Path, destinations: Sequence[Destination],
                      note: Dataset, priors: Sequence[PriorObject], job_id: int) -> int:
    """Send ``note`` to each destination given any of ``priors`` (a destination that got an
    SC only gets the note that rejects it, even if it takes no KOS otherwise)."""
    from osteo_node.outbox.store import enqueue

    given = destinations_given(engine, priors)
    targets = [replace(d, kinds=d.kinds | {"kos"}) for d in destinations if d.name in given]
    if not targets:
        return 0
    enqueue(engine, outbox_dir, [note], targets, job_id=rejection_job_id(job_id), kind="kos")
    log.info("results superseded", job_id=job_id, rejected=len(priors),
             note_uid=str(note.SOPInstanceUID), destinations=sorted(given))
    return 1
