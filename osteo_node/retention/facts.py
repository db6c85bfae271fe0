"""The node's state that retention decides on, read from the database (SQLAlchemy Core).

:func:`spool_candidates`: one :class:`~.policy.Candidate` per series with files in the spool,
aged from its last received instance; :func:`outbox_candidates`: one per result object with its
file in the outbox folder, aged from when its last delivery ended. Each carries its blocker
(:mod:`.policy`), so the same functions also re-check one candidate right before it is deleted.
Result objects belong to the series of the job that made them (``outbox_objects.job_id`` is
the job's id, or ``<id>/rejection`` for the rejection note of a later generation).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, select

from osteo_node.outbox.tables import outbox_items, outbox_objects
from osteo_node.queue.jobs import jobs
from osteo_node.retention.policy import (
    OPEN_ITEM_STATES,
    Candidate,
    SeriesState,
    object_blocker,
    series_blocker,
)
from osteo_node.store.index import series, studies


@dataclass(frozen=True)
class SeriesKey:
    series_id: int
    series_uid: str
    study_uid: str


@dataclass(frozen=True)
class ObjectKey:
    sop_uid: str
    study_uid: str | None
    rel_path: str


def job_of_object(job_id: str | None) -> int | None:
    """The node job that made an outbox object (``"12"``, ``"12/rejection"``); None for an
    object enqueued by hand (no job)."""
    head = (job_id or "").split("/", 1)[0]
    return int(head) if head.isdigit() else None


def epoch(value: datetime) -> float:
    """A naive UTC time of the outbox tables as epoch seconds."""
    return value.replace(tzinfo=UTC).timestamp()


def naive_utc(t: float) -> datetime:
    """Epoch seconds as the outbox tables store time (naive UTC)."""
    return datetime.fromtimestamp(t, UTC).replace(tzinfo=None)


def spool_candidates(conn: Connection, series_id: int | None = None
                     ) -> list[Candidate[SeriesKey]]:
    """Every series with files in the spool (or only ``series_id``), with its blocker."""
    q = (select(series.c.id, series.c.series_instance_uid, studies.c.study_instance_uid,
                series.c.generation, series.c.job_generation, series.c.last_received_at,
                series.c.spool_bytes)
         .join(studies, studies.c.id == series.c.study_id)
         .where(series.c.purged_at.is_(None)))
    job_q = (select(jobs.c.id, jobs.c.series_id, jobs.c.state)
             .join(series, series.c.id == jobs.c.series_id)
             .where(series.c.purged_at.is_(None)))
    if series_id is not None:
        q = q.where(series.c.id == series_id)
        job_q = job_q.where(jobs.c.series_id == series_id)
    rows = conn.execute(q).all()
    if not rows:
        return []
    job_states: dict[int, list[str]] = defaultdict(list)
    series_of_job: dict[int, int] = {}
    for job_id, sid, state in conn.execute(job_q):
        job_states[sid].append(state)
        series_of_job[job_id] = sid
    result_states: dict[int, list[str]] = defaultdict(list)
    # one series (a re-check): only its jobs' results, not every delivery that is waiting
    jobs_of_one = sorted(series_of_job) if series_id is not None else None
    for job_id, state in _open_items_by_job(conn, jobs_of_one):
        sid = None if job_id is None else series_of_job.get(job_id)
        if sid is not None:
            result_states[sid].append(state)
    out = []
    for r in rows:
        state = SeriesState(r.generation, r.job_generation, tuple(job_states[r.id]),
                            tuple(result_states[r.id]))
        out.append(Candidate(SeriesKey(r.id, r.series_instance_uid, r.study_instance_uid),
                             int(r.spool_bytes or 0), float(r.last_received_at),
                             series_blocker(state)))
    return out


def _open_items_by_job(conn: Connection, job_ids: list[int] | None = None
                       ) -> Iterable[tuple[int | None, str]]:
    """(job id, state) of every delivery not finished yet (what waits for PACS), or only of
    the results of ``job_ids``."""
    q = (select(outbox_objects.c.job_id, outbox_items.c.state)
         .join_from(outbox_items, outbox_objects)
         .where(outbox_items.c.state.in_(sorted(OPEN_ITEM_STATES))))
    if job_ids is not None:
        if not job_ids:
            return []
        q = q.where(outbox_objects.c.job_id.in_(
            [str(j) for j in job_ids] + [f"{j}/rejection" for j in job_ids]))
    return [(job_of_object(job_id), state) for job_id, state in conn.execute(q)]


def outbox_candidates(conn: Connection, sop_uid: str | None = None
                      ) -> list[Candidate[ObjectKey]]:
    """Every result object with its file in the outbox folder (or only ``sop_uid``), aged from
    the end of its last delivery (sent, or given up), with its blocker."""
    q = (select(outbox_objects.c.sop_instance_uid, outbox_objects.c.study_instance_uid,
                outbox_objects.c.rel_path, outbox_objects.c.size_bytes,
                outbox_objects.c.created_at, outbox_items.c.state, outbox_items.c.sent_at,
                outbox_items.c.updated_at)
         .join_from(outbox_objects, outbox_items)
         .where(outbox_objects.c.purged_at.is_(None)))
    if sop_uid is not None:
        q = q.where(outbox_objects.c.sop_instance_uid == sop_uid)
    objects: dict[str, tuple[ObjectKey, int, datetime]] = {}
    states: dict[str, list[str]] = defaultdict(list)
    ended: dict[str, datetime] = {}
    for r in conn.execute(q):
        uid = r.sop_instance_uid
        objects[uid] = (ObjectKey(uid, r.study_instance_uid, r.rel_path), int(r.size_bytes),
                        r.created_at)
        states[uid].append(r.state)
        end = r.sent_at or r.updated_at
        if uid not in ended or end > ended[uid]:
            ended[uid] = end
    return [Candidate(key, size, epoch(ended.get(uid, created)), object_blocker(states[uid]))
            for uid, (key, size, created) in objects.items()]
