"""What retention may delete and what it should delete: pure functions, no I/O.

Two questions, asked separately of the spool (one candidate per received series) and of the
outbox (one candidate per result object):

* **May it go?** (:func:`series_blocker`, :func:`object_blocker`) Never while its series is
  still receiving (a generation without a job yet), queued or being analysed, nor before every
  result of it was delivered or given up (an outbox item ``pending`` or ``sending``, also an
  overdue one that is still retried, keeps it). A job that failed for good and an outbox item
  that ended ``failed`` are settled: they no longer hold data back.
* **Should it go now?** (:func:`plan`) A settled candidate goes when it is older than the age
  limit; then, while the total is above the size limit, the oldest settled candidates go
  first. Unsettled data is never deleted to meet a size limit: when only that is left, the
  plan says by how much the limit stays exceeded (the caller warns).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from osteo_node.outbox.tables import PENDING, SENDING
from osteo_node.queue.jobs import QUEUED, RUNNING

#: why a candidate may not be deleted yet
RECEIVING = "receiving"  # instances arrived since the last job was queued (or none yet)
ANALYSIS_PENDING = "analysis_pending"  # a job of the series is queued or running
RESULTS_UNDELIVERED = "results_undelivered"  # a result is waiting for (or being sent to) PACS
BLOCKERS = (RECEIVING, ANALYSIS_PENDING, RESULTS_UNDELIVERED)

#: why a candidate is deleted
AGE = "age"
SIZE = "size"

OPEN_JOB_STATES = frozenset({QUEUED, RUNNING})
OPEN_ITEM_STATES = frozenset({PENDING, SENDING})

K = TypeVar("K")


@dataclass(frozen=True)
class SeriesState:
    """What decides whether a series' spool files may go."""

    generation: int
    job_generation: int
    job_states: tuple[str, ...] = ()  # of every job of the series
    result_states: tuple[str, ...] = ()  # of every outbox item of those jobs' objects


def series_blocker(state: SeriesState) -> str | None:
    """Why the series' files must stay, or None when the series is settled."""
    if state.generation > state.job_generation:
        return RECEIVING
    if OPEN_JOB_STATES.intersection(state.job_states):
        return ANALYSIS_PENDING
    return object_blocker(state.result_states)


def object_blocker(item_states: Iterable[str]) -> str | None:
    """Why a result object's file must stay (one of its deliveries is not finished), or None
    when every delivery ended ``sent`` or ``failed``."""
    if OPEN_ITEM_STATES.intersection(item_states):
        return RESULTS_UNDELIVERED
    return None


@dataclass(frozen=True)
class Candidate(Generic[K]):
    """Something retention could delete: ``size`` bytes, aged from ``since`` (epoch s)."""

    key: K
    size: int
    since: float
    blocker: str | None = None

    @property
    def settled(self) -> bool:
        return self.blocker is None


@dataclass(frozen=True)
class Limits:
    """None: no limit of that kind."""

    max_age_s: float | None = None
    max_total_bytes: int | None = None

    @property
    def any(self) -> bool:
        return self.max_age_s is not None or self.max_total_bytes is not None


@dataclass(frozen=True)
class Deletion(Generic[K]):
    candidate: Candidate[K]
    reason: str  # AGE | SIZE


@dataclass(frozen=True)
class Plan(Generic[K]):
    """What one round deletes and the totals around it."""

    deletions: tuple[Deletion[K], ...]
    total: int  # bytes of all candidates
    settled: int  # bytes of the settled ones
    settled_count: int
    count: int
    #: bytes left above the size limit once everything settled is planned (0: limit met or
    #: none); only unsettled data is left to blame
    over_limit: int = 0
    blocked: dict[str, int] = field(default_factory=dict)  # blocker -> candidates

    @property
    def deleted_bytes(self) -> int:
        return sum(d.candidate.size for d in self.deletions)

    @property
    def remaining(self) -> int:
        return self.total - self.deleted_bytes


def _oldest_first(c: Candidate[K]) -> tuple[float, str]:
    return (c.since, repr(c.key))


def plan(candidates: Sequence[Candidate[K]], limits: Limits, now: float) -> Plan[K]:
    """The deletions of one round (see the module doc), oldest first."""
    settled = sorted((c for c in candidates if c.settled), key=_oldest_first)
    deletions: list[Deletion[K]] = []
    chosen: set[int] = set()
    if limits.max_age_s is not None:
        cutoff = now - limits.max_age_s
        for i, c in enumerate(settled):
            if c.since <= cutoff:
                deletions.append(Deletion(c, AGE))
                chosen.add(i)
    total = sum(c.size for c in candidates)
    remaining = total - sum(d.candidate.size for d in deletions)
    over = 0
    if limits.max_total_bytes is not None:
        for i, c in enumerate(settled):
            if remaining <= limits.max_total_bytes:
                break
            if i in chosen:
                continue
            deletions.append(Deletion(c, SIZE))
            remaining -= c.size
        over = max(0, remaining - limits.max_total_bytes)
    deletions.sort(key=lambda d: _oldest_first(d.candidate))
    blocked = Counter(c.blocker for c in candidates if c.blocker is not None)
    return Plan(deletions=tuple(deletions), total=total,
                settled=sum(c.size for c in settled), settled_count=len(settled),
                count=len(candidates), over_limit=over, blocked=dict(sorted(blocked.items())))
