"""The sender loop: claim due outbox items, deliver them per destination, record the outcomes.

Per pass it claims at most ``batch_size`` items per destination and opens ONE association per
destination (:mod:`.association`), in parallel threads when several destinations have work. Each
item is marked sent or failed from the returned status; a failed association or a non-success
status is retried with exponential backoff (:class:`RetryPolicy`) until ``max_attempts``, then
the item is ``failed`` with the reason. :meth:`OutboxSender.serve` repeats passes until stopped.
A DICOMweb destination (``Destination.dicomweb``) is sent to by STOW-RS instead (:mod:`.stow`),
with the same claims, outcomes and backoff; while it stands held after rejecting our
credentials its items are not claimed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import structlog
from pynetdicom.association import Association
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from osteo_node.outbox.association import StoreOutcome, accepted_pairs, associate, store_item
from osteo_node.outbox.claims import (
    ClaimedItem,
    claim_due,
    mark_failed_attempt,
    mark_sent,
    recover_interrupted,
)
from osteo_node.outbox.clock import utcnow
from osteo_node.outbox.contexts import split_for_contexts
from osteo_node.outbox.policy import Destination, RetryPolicy, SenderSettings
from osteo_node.outbox.queries import next_due_at
from osteo_node.outbox.stow import StowSender
from osteo_node.outbox.tables import FAILED

log = structlog.get_logger(__name__)


@dataclass
class SendReport:
    """What one :meth:`OutboxSender.run_once` did."""

    claimed: int = 0
    sent: int = 0
    retrying: int = 0
    failed: int = 0
    #: outcomes not recorded because the claim was lost meanwhile (the lease expired and
    #: another sender took the item over; that sender records it)
    lost: int = 0
    associations: int = 0
    #: STOW-RS requests made (DICOMweb destinations)
    requests: int = 0
    per_destination: dict[str, dict[str, int]] = field(default_factory=dict)
    claimed_per_destination: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def count(self, destination: str, outcome: str) -> None:
        with self._lock:  # destinations are delivered from parallel threads
            setattr(self, outcome, getattr(self, outcome) + 1)
            d = self.per_destination.setdefault(destination, {})
            d[outcome] = d.get(outcome, 0) + 1

    def add_requests(self, n: int) -> None:
        with self._lock:
            self.requests += n


class OutboxSender:
    """Delivers due outbox items; see the module docstring."""

    def __init__(
        self,
        engine: Engine,
        outbox_dir: Path,
        destinations: Sequence[Destination],
        retry: RetryPolicy,
        *,
        settings: SenderSettings | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        names = [d.name for d in destinations]
        if len(set(names)) != len(names):
            raise ValueError(f"destination names must be unique, got {names}")
        self.engine = engine
        self.outbox_dir = Path(outbox_dir)
        self.destinations = {d.name: d for d in destinations}
        self.retry = retry
        self.settings = settings or SenderSettings()
        self.clock = clock
        self._wake = threading.Event()
        self._stow = {
            d.name: StowSender(d, self.settings.timeouts)
            for d in destinations
            if d.dicomweb is not None
        }

    def _sendable(self) -> list[str]:
        """The destinations whose items may be claimed now (not held, see :mod:`.stow`)."""
        return [n for n in self.destinations if n not in self._stow
                or not self._stow[n].held(self.engine)]

    # -- one pass -------------------------------------------------------------------------
    def run_once(self) -> SendReport:
        """Claim the due items of each destination (at most ``batch_size`` each, so a dead
        destination with a long backlog cannot starve the others), send them, record outcomes."""
        report = SendReport()
        now = self.clock()
        groups: dict[str, list[ClaimedItem]] = {}
        for name in self._sendable():
            items = claim_due(
                self.engine,
                self.outbox_dir,
                [name],
                now,
                limit=self.settings.batch_size,
                lease_s=self.settings.lease_s,
            )
            if items:
                groups[name] = items
                report.claimed += len(items)
                report.claimed_per_destination[name] = len(items)
        if len(groups) == 1:
            for name, group in groups.items():
                self._deliver(self.destinations[name], group, report)
        elif groups:  # destinations are independent: a slow or dead one must not delay others
            with ThreadPoolExecutor(max_workers=min(len(groups), 8)) as pool:
                futures = [
                    pool.submit(self._deliver, self.destinations[name], group, report)
                    for name, group in groups.items()
                ]
                for f in futures:
                    f.result()
        return report

    def _deliver(self, dest: Destination, items: list[ClaimedItem], report: SendReport) -> None:
        stow = self._stow.get(dest.name)
        if stow is not None:
            made = stow.deliver(items, lambda it, outcome: self._record(dest, it, outcome, report))
            report.add_requests(made)
            return
        # Stay within the per-association context limit: split into chunks if ever needed.
        for chunk in split_for_contexts(items):
            self._deliver_chunk(dest, chunk, report)

    def _deliver_chunk(
        self, dest: Destination, items: list[ClaimedItem], report: SendReport
    ) -> None:
        missing = [it for it in items if not it.path.is_file()]
        for it in missing:
            self._record(dest, it, StoreOutcome(False, None, "outbox file missing", True), report)
        items = [it for it in items if it.path.is_file()]
        if not items:
            return
        assoc = associate(dest, items, self.settings.timeouts)
        report.associations += 1
        if not isinstance(assoc, Association):
            for it in items:
                self._record(dest, it, StoreOutcome(False, None, assoc), report)
            return
        accepted = accepted_pairs(assoc)  # once per association
        try:
            for i, it in enumerate(items):
                if not assoc.is_established:
                    for rest in items[i:]:
                        outcome = StoreOutcome(False, None, "association lost before sending")
                        self._record(dest, rest, outcome, report)
                    break
                outcome = store_item(assoc, accepted, it, msg_id=i + 1)
                self._record(dest, it, outcome, report)
        finally:
            if assoc.is_established:
                assoc.release()

    def _record(
        self, dest: Destination, it: ClaimedItem, outcome: StoreOutcome, report: SendReport
    ) -> None:
        now = self.clock()
        ids = {
            "sop_instance_uid": it.sop_instance_uid,
            "destination": dest.name,
            "attempt": it.attempts,
        }
        if outcome.ok:
            if not mark_sent(self.engine, it, now, status=outcome.status or 0, note=outcome.reason):
                self._lost(dest, it, report, "sent")
                return
            report.count(dest.name, "sent")
            if outcome.reason:
                log.warning("outbox.sent_with_warning", status=outcome.status, **ids)
            else:
                log.info("outbox.sent", **ids)
            return
        state = mark_failed_attempt(
            self.engine,
            it,
            now,
            self.retry,
            outcome.reason or "unknown failure",
            status=outcome.status,
            permanent=outcome.permanent,
        )
        if state is None:
            self._lost(dest, it, report, outcome.reason or "unknown failure")
        elif state == FAILED:
            report.count(dest.name, "failed")
            log.error("outbox.failed", reason=outcome.reason, status=outcome.status, **ids)
        elif it.attempts == self.retry.max_attempts:  # once, when it leaves the retry window
            report.count(dest.name, "retrying")
            log.error("outbox.overdue", reason=outcome.reason, status=outcome.status,
                      retry_every_s=self.retry.max_delay_s, **ids)
        else:
            report.count(dest.name, "retrying")
            log.warning("outbox.retry", reason=outcome.reason, status=outcome.status, **ids)

    @staticmethod
    def _lost(dest: Destination, it: ClaimedItem, report: SendReport, outcome: str) -> None:
        """The claim was lost before the outcome could be recorded (the lease expired and
        another sender took the item over): counted apart, the other sender records it."""
        report.count(dest.name, "lost")
        log.warning(
            "outbox.claim_lost",
            outcome=outcome,
            sop_instance_uid=it.sop_instance_uid,
            destination=dest.name,
            attempt=it.attempts,
        )

    # -- loop -----------------------------------------------------------------------------
    def wake(self) -> None:
        """Ask a serving loop to look for due items now (e.g. right after an enqueue)."""
        self._wake.set()

    def recover(self) -> int:
        """Take up items left in ``sending`` by a crashed sender (call before serving)."""
        n = recover_interrupted(self.engine, self.clock())
        if n:
            log.warning("outbox.recovered_interrupted", items=n)
        return n

    def serve(self, stop_event: threading.Event) -> None:
        """Deliver until ``stop_event`` is set; never raises on a bad batch or a database hiccup."""
        log.info("outbox.sender_started", destinations=sorted(self.destinations))
        while not stop_event.is_set():
            try:
                report = self.run_once()
                full = self.settings.batch_size
                busy = any(n >= full for n in report.claimed_per_destination.values())
                delay = 0.0 if busy else self._idle_delay()
            except SQLAlchemyError as exc:
                log.error("outbox.database_error", error=f"{type(exc).__name__}: {exc}")
                delay = max(self.settings.poll_interval_s, 2.0)
            except Exception as exc:  # the daemon loop must survive a bad batch (logged)
                log.exception("outbox.unexpected_error", error=f"{type(exc).__name__}")
                delay = max(self.settings.poll_interval_s, 2.0)
            if delay > 0 and not stop_event.is_set():
                self._wake.wait(delay)
                self._wake.clear()
        log.info("outbox.sender_stopped")

    def _idle_delay(self) -> float:
        due = next_due_at(self.engine, self._sendable())
        poll = self.settings.poll_interval_s
        if due is None:
            return poll
        return max(0.0, min(poll, (due - self.clock()).total_seconds()))
