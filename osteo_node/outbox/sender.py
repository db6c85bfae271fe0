"""The outbox sender: a C-STORE SCU that delivers due outbox items to their destinations.

Per batch it opens ONE association per destination, proposing only the presentation contexts the
batch needs: for each SOP class, the transfer syntax(es) of its stored files, plus Explicit and
Implicit VR Little Endian as fallbacks (a compressed file is decompressed when the peer accepts
only an uncompressed syntax). Each item is marked sent or failed from the returned status; a
failed association or a non-success status is retried with exponential backoff
(:class:`RetryPolicy`) until ``max_attempts``, then the item is ``failed`` with the reason.

Run it as its own process with :func:`run_sender` (the node's supervisor does), or drive an
:class:`OutboxSender` directly (``run_once`` / ``serve``).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import FrameType

import structlog
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext, build_context
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from osteo_node.outbox import store
from osteo_node.outbox.policy import Destination, RetryPolicy
from osteo_node.outbox.tables import FAILED, create_tables

log = structlog.get_logger(__name__)

UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
#: C-STORE warning statuses (Part 4 B.2.3): the object was stored.
WARNING_STATUSES = frozenset({0x0001, 0xB000, 0xB006, 0xB007})
MAX_CONTEXTS = 128  # DICOM limit on presentation contexts per association (odd IDs 1..255)


@dataclass(frozen=True)
class Timeouts:
    """Seconds; ``connect`` is the TCP connection timeout."""

    connect: float = 10.0
    acse: float = 30.0
    dimse: float = 60.0
    network: float = 60.0


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
    per_destination: dict[str, dict[str, int]] = field(default_factory=dict)
    claimed_per_destination: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def count(self, destination: str, outcome: str) -> None:
        with self._lock:  # destinations are delivered from parallel threads
            setattr(self, outcome, getattr(self, outcome) + 1)
            d = self.per_destination.setdefault(destination, {})
            d[outcome] = d.get(outcome, 0) + 1


@dataclass(frozen=True)
class _Outcome:
    ok: bool
    status: int | None
    reason: str | None
    permanent: bool = False


def presentation_contexts(items: Sequence[store.ClaimedItem]) -> list[PresentationContext]:
    """The contexts a batch needs: per SOP class, one single-syntax context per transfer syntax
    of its files, then Explicit and Implicit VR Little Endian as fallbacks (no duplicates)."""
    wanted: dict[str, list[str]] = {}
    for it in items:
        syntaxes = wanted.setdefault(it.sop_class_uid, [])
        if it.transfer_syntax_uid not in syntaxes:
            syntaxes.insert(0, it.transfer_syntax_uid)
    contexts = []
    for sop_class, syntaxes in wanted.items():
        for ts in [*syntaxes, *(str(u) for u in UNCOMPRESSED if str(u) not in syntaxes)]:
            contexts.append(build_context(sop_class, ts))
    return contexts


def _contexts_for(syntaxes: set[str]) -> int:
    """How many contexts :func:`presentation_contexts` proposes for a SOP class whose files
    have ``syntaxes``."""
    return len(syntaxes | _UNCOMPRESSED_STR)


_UNCOMPRESSED_STR = frozenset(str(u) for u in UNCOMPRESSED)


def split_for_contexts(
    items: Sequence[store.ClaimedItem], limit: int = MAX_CONTEXTS
) -> list[list[store.ClaimedItem]]:
    """Split a batch, in order, into chunks whose presentation contexts fit one association
    (each chunk as large as fits). Linear in the batch: the context count is kept per SOP
    class as items are added."""
    chunks: list[list[store.ClaimedItem]] = []
    chunk: list[store.ClaimedItem] = []
    per_class: dict[str, set[str]] = {}
    total = 0
    for it in items:
        have = per_class.get(it.sop_class_uid)
        before = _contexts_for(have) if have is not None else 0
        grown = (have or set()) | {it.transfer_syntax_uid}
        if chunk and total - before + _contexts_for(grown) > limit:
            chunks.append(chunk)
            chunk, per_class, total = [], {}, 0
            before, grown = 0, {it.transfer_syntax_uid}
        total += _contexts_for(grown) - before
        per_class[it.sop_class_uid] = grown
        chunk.append(it)
    if chunk:
        chunks.append(chunk)
    return chunks


class OutboxSender:
    """Delivers due outbox items; see the module docstring."""

    def __init__(
        self,
        engine: Engine,
        outbox_dir: Path,
        destinations: Sequence[Destination],
        retry: RetryPolicy,
        *,
        batch_size: int = 200,
        lease_s: float = 900.0,
        poll_interval_s: float = 0.5,
        timeouts: Timeouts | None = None,
        clock: Callable[[], datetime] = store.utcnow,
    ) -> None:
        names = [d.name for d in destinations]
        if len(set(names)) != len(names):
            raise ValueError(f"destination names must be unique, got {names}")
        self.engine = engine
        self.outbox_dir = Path(outbox_dir)
        self.destinations = {d.name: d for d in destinations}
        self.retry = retry
        self.batch_size = batch_size
        self.lease_s = lease_s
        self.poll_interval_s = poll_interval_s
        self.timeouts = timeouts or Timeouts()
        self.clock = clock
        self._wake = threading.Event()

    # -- one pass -------------------------------------------------------------------------
    def run_once(self) -> SendReport:
        """Claim the due items of each destination (at most ``batch_size`` each, so a dead
        destination with a long backlog cannot starve the others), send them, record outcomes."""
        report = SendReport()
        now = self.clock()
        groups: dict[str, list[store.ClaimedItem]] = {}
        for name in self.destinations:
            items = store.claim_due(
                self.engine,
                self.outbox_dir,
                [name],
                now,
                limit=self.batch_size,
                lease_s=self.lease_s,
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

    def _deliver(
        self, dest: Destination, items: list[store.ClaimedItem], report: SendReport
    ) -> None:
        # Stay within the per-association context limit: split into chunks if ever needed.
        for chunk in split_for_contexts(items):
            self._deliver_chunk(dest, chunk, report)

    def _deliver_chunk(
        self, dest: Destination, items: list[store.ClaimedItem], report: SendReport
    ) -> None:
        missing = [it for it in items if not it.path.is_file()]
        for it in missing:
            self._record(dest, it, _Outcome(False, None, "outbox file missing", True), report)
        items = [it for it in items if it.path.is_file()]
        if not items:
            return
        assoc = self._associate(dest, items)
        report.associations += 1
        if not isinstance(assoc, Association):
            for it in items:
                self._record(dest, it, _Outcome(False, None, assoc), report)
            return
        accepted = {  # once per association
            (str(cx.abstract_syntax), str(cx.transfer_syntax[0]))
            for cx in assoc.accepted_contexts
            if cx.transfer_syntax
        }
        try:
            for i, it in enumerate(items):
                if not assoc.is_established:
                    for rest in items[i:]:
                        outcome = _Outcome(False, None, "association lost before sending")
                        self._record(dest, rest, outcome, report)
                    break
                outcome = self._store(assoc, accepted, it, msg_id=i + 1)
                self._record(dest, it, outcome, report)
        finally:
            if assoc.is_established:
                assoc.release()

    def _associate(self, dest: Destination, items: list[store.ClaimedItem]) -> Association | str:
        """An established association, or the reason why there is none."""
        ae = AE(ae_title=dest.calling_ae_title)
        ae.connection_timeout = self.timeouts.connect
        ae.acse_timeout = self.timeouts.acse
        ae.dimse_timeout = self.timeouts.dimse
        ae.network_timeout = self.timeouts.network
        contexts = presentation_contexts(items)
        connected = threading.Event()
        handlers: list[evt.EventHandlerType] = [
            (evt.EVT_CONN_OPEN, lambda _event: connected.set())
        ]
        try:
            tls_args = None
            if dest.tls is not None:
                tls_args = (dest.tls.ssl_context(), dest.tls.server_hostname or dest.host)
            assoc = ae.associate(
                dest.host,
                dest.port,
                contexts=contexts,
                ae_title=dest.ae_title,
                tls_args=tls_args,
                evt_handlers=handlers,
            )
        except (OSError, ValueError, RuntimeError) as exc:
            return f"association failed: {type(exc).__name__}: {exc}"
        if assoc.is_established:
            log.debug(
                "outbox.association",
                destination=dest.name,
                proposed=len(contexts),
                accepted=len(assoc.accepted_contexts),
            )
            return assoc
        if not connected.is_set():
            why = "refused or timed out"
            if tls_args:
                why = "refused, timed out or TLS handshake failed"
            return f"could not connect to {dest.host}:{dest.port} ({why})"
        if assoc.is_rejected:
            return "association rejected by the peer"
        if assoc.rejected_contexts and not assoc.accepted_contexts:
            classes = sorted({str(cx.abstract_syntax) for cx in contexts})
            return f"peer accepted no presentation context for SOP class(es) {', '.join(classes)}"
        if assoc.is_aborted:
            return "association aborted by the peer"
        return "no association (no answer to the association request)"

    def _store(
        self,
        assoc: Association,
        accepted: set[tuple[str, str]],
        it: store.ClaimedItem,
        msg_id: int,
    ) -> _Outcome:
        """C-STORE one item; ``accepted``: the association's (SOP class, syntax) pairs."""
        ts = UID(it.transfer_syntax_uid)
        try:
            ds: Dataset = dcmread(it.path)
            if (it.sop_class_uid, str(ts)) not in accepted:
                fallback = [u for u in UNCOMPRESSED if (it.sop_class_uid, str(u)) in accepted]
                if not fallback:
                    return _Outcome(
                        False,
                        None,
                        f"peer accepted no presentation context for SOP class {it.sop_class_uid}",
                    )
                if ts.is_compressed:
                    # The peer takes only uncompressed: send it decoded, keeping its UID.
                    ds.decompress(generate_instance_uid=False)
            status = assoc.send_c_store(ds, msg_id=msg_id)
        except (OSError, InvalidDicomError) as exc:
            return _Outcome(False, None, f"cannot read outbox file: {exc}", permanent=True)
        except (ValueError, AttributeError, RuntimeError, NotImplementedError) as exc:
            return _Outcome(False, None, f"cannot send: {type(exc).__name__}: {exc}")
        if "Status" not in status:
            return _Outcome(False, None, "no C-STORE response (timeout or association aborted)")
        code = int(status.Status)
        comment = status.get("ErrorComment")
        if code == 0x0000:
            return _Outcome(True, code, None)
        if code in WARNING_STATUSES:
            return _Outcome(True, code, f"stored with warning 0x{code:04X}")
        reason = f"C-STORE status 0x{code:04X}" + (f": {comment}" if comment else "")
        return _Outcome(False, code, reason)

    def _record(
        self, dest: Destination, it: store.ClaimedItem, outcome: _Outcome, report: SendReport
    ) -> None:
        now = self.clock()
        ids = {
            "sop_instance_uid": it.sop_instance_uid,
            "destination": dest.name,
            "attempt": it.attempts,
        }
        if outcome.ok:
            if not store.mark_sent(
                self.engine, it, now, status=outcome.status or 0, note=outcome.reason
            ):
                self._lost(dest, it, report, "sent")
                return
            report.count(dest.name, "sent")
            if outcome.reason:
                log.warning("outbox.sent_with_warning", status=outcome.status, **ids)
            else:
                log.info("outbox.sent", **ids)
            return
        state = store.mark_failed_attempt(
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
        else:
            report.count(dest.name, "retrying")
            log.warning("outbox.retry", reason=outcome.reason, status=outcome.status, **ids)

    @staticmethod
    def _lost(dest: Destination, it: store.ClaimedItem, report: SendReport, outcome: str) -> None:
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
        n = store.recover_interrupted(self.engine, self.clock())
        if n:
            log.warning("outbox.recovered_interrupted", items=n)
        return n

    def serve(self, stop_event: threading.Event) -> None:
        """Deliver until ``stop_event`` is set; never raises on a bad batch or a database hiccup."""
        log.info("outbox.sender_started", destinations=sorted(self.destinations))
        while not stop_event.is_set():
            try:
                report = self.run_once()
                busy = any(n >= self.batch_size for n in report.claimed_per_destination.values())
                delay = 0.0 if busy else self._idle_delay()
            except SQLAlchemyError as exc:
                log.error("outbox.database_error", error=f"{type(exc).__name__}: {exc}")
                delay = max(self.poll_interval_s, 2.0)
            except Exception as exc:  # the daemon loop must survive a bad batch (logged)
                log.exception("outbox.unexpected_error", error=f"{type(exc).__name__}")
                delay = max(self.poll_interval_s, 2.0)
            if delay > 0 and not stop_event.is_set():
                self._wake.wait(delay)
                self._wake.clear()
        log.info("outbox.sender_stopped")

    def _idle_delay(self) -> float:
        due = store.next_due_at(self.engine, self.destinations)
        if due is None:
            return self.poll_interval_s
        return max(0.0, min(self.poll_interval_s, (due - self.clock()).total_seconds()))


def run_sender(
    database_url: str,
    outbox_dir: str | Path,
    destinations: Sequence[Destination],
    retry: RetryPolicy,
    *,
    stop_event: threading.Event | None = None,
    poll_interval_s: float = 0.5,
    batch_size: int = 200,
    timeouts: Timeouts | None = None,
    log_level: str | None = None,
) -> int:
    """Entry point of the sender process: create the tables if needed, take up interrupted items,
    deliver until stopped (``stop_event``, or SIGTERM/SIGINT when none is given). Returns 0."""
    from osteo_node.store.db import make_engine

    if log_level is not None:
        from osteo_node.logging_setup import configure

        configure(log_level)
    engine = make_engine(database_url)
    create_tables(engine)
    sender = OutboxSender(
        engine,
        Path(outbox_dir),
        destinations,
        retry,
        batch_size=batch_size,
        poll_interval_s=poll_interval_s,
        timeouts=timeouts,
    )
    stop = stop_event if stop_event is not None else threading.Event()
    if stop_event is None and threading.current_thread() is threading.main_thread():

        def _on_signal(_signum: int, _frame: FrameType | None) -> None:
            stop.set()
            sender.wake()

        signal.signal(signal.SIGTERM, _on_signal)
        signal.signal(signal.SIGINT, _on_signal)
    sender.recover()
    try:
        sender.serve(stop)
    finally:
        engine.dispose()
    return 0
