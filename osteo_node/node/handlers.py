"""DICOM event handlers: association policy, C-ECHO and C-STORE (validate, spool, index).

Handlers never raise: every outcome is a DIMSE status. No analysis runs here; the assembler and
workers (other processes) pick up what the index records.
"""

from __future__ import annotations

import time
import zlib
from typing import Any

import structlog
from pydicom.dataset import Dataset
from pydicom.uid import UID

from osteo_node.config import DicomSettings
from osteo_node.node.filemeta import encode_file_meta
from osteo_node.node.validate import (
    STATUS_CANNOT_UNDERSTAND,
    STATUS_OUT_OF_RESOURCES,
    STATUS_PROCESSING_FAILURE,
    STATUS_SUCCESS,
    Accepted,
    Rejected,
    check_dataset,
)
from osteo_node.safe_errors import describe
from osteo_node.store.index import InstanceRecord
from osteo_node.store.index_writer import IndexWriter
from osteo_node.store.spool import Spool, SpoolFullError, SpoolKey

log = structlog.get_logger(__name__)


def status(code: int, comment: str = "") -> Dataset:
    """A C-STORE response status with an Error Comment (at most 64 characters)."""
    ds = Dataset()
    ds.Status = code
    if comment:
        ds.ErrorComment = comment[:64]
    return ds


def _serving(ae: Any) -> list[Any]:
    """The acceptor associations that are established (callers being served)."""
    return [a for a in ae.active_associations if a.is_acceptor and a.is_established]


class AssociationPolicy:
    """EVT_REQUESTED: reject callers whose AE title (and host, where pinned) is not allowed, and
    callers beyond ``max_associations`` served at once (counting only established
    associations: idle connections that never associate do not take callers' slots)."""

    def __init__(self, settings: DicomSettings) -> None:
        self.settings = settings

    def __call__(self, evt: Any) -> None:
        try:
            assoc = evt.assoc
            calling = str(assoc.requestor.primitive.calling_ae_title).strip()
            host = str(assoc.requestor.address)
            if self.settings.caller_permitted(calling, host):
                if len(_serving(assoc.ae)) >= self.settings.max_associations:
                    log.warning("association rejected: local limit exceeded",
                                calling_ae=calling, peer=host,
                                limit=self.settings.max_associations)
                    # rejected-transient, service-provider (presentation), local limit exceeded
                    assoc.acse.send_reject(0x02, 0x03, 0x02)
                    assoc.kill()
                    return
                log.info("association requested", calling_ae=calling, peer=host)
                return
            log.warning("association rejected: calling AE not allowed",
                        calling_ae=calling, peer=host)
            # rejected-permanent, service-user, calling AE title not recognised
            assoc.acse.send_reject(0x01, 0x01, 0x03)
            assoc.kill()  # waits until the A-ASSOCIATE-RJ is on the wire, as pynetdicom does
        except Exception as exc:  # noqa: BLE001 - never raise into pynetdicom
            log.error("association policy check failed; aborting association",
                      error=describe(exc))
            evt.assoc.abort()


class PeerBudget:
    """Connections that have not associated yet: at most ``pre_association_per_peer`` per peer
    address (each lives at most ``association_request_timeout_s``, the ARTIM timer); more are
    closed at TCP accept, before any association exists, and logged once per peer and minute,
    not per connection or PDU."""

    def __init__(self, settings: DicomSettings, clock: Any = time.monotonic) -> None:
        self.limit = settings.pre_association_per_peer
        self.clock = clock
        self.reported: dict[str, float] = {}

    def admit(self, peer: str, ae: Any) -> bool:
        """Never raises: any error admits the connection (the ARTIM timer still bounds it)."""
        try:
            pending = [a for a in ae.active_associations
                       if a.is_acceptor and not a.is_established
                       and str(a.requestor.address) == peer]
            if len(pending) < self.limit:
                return True
            now = self.clock()
            if now - self.reported.get(peer, -1e9) >= 60.0:
                self.reported[peer] = now
                log.warning("connections refused: too many from one peer without an "
                            "association", peer=peer, limit=self.limit)
            return False
        except Exception as exc:  # noqa: BLE001 - a policy check never breaks the server
            log.error("connection budget check failed", error=describe(exc))
            return True


def handle_echo(evt: Any) -> int:
    return STATUS_SUCCESS


C_STORE_RQ = 0x0001


def answer_invalid_store(evt: Any) -> None:
    """EVT_DIMSE_RECV: a C-STORE-RQ without an Affected SOP Instance UID is not a valid request;
    pynetdicom drops it without an answer and the sender waits for its DIMSE timeout (120 s and
    more). Answer it at once with 0xC000 (cannot understand) instead. Never raises."""
    try:
        cmd = evt.message.command_set
        if int(cmd.get("CommandField", 0)) != C_STORE_RQ or \
                str(cmd.get("AffectedSOPInstanceUID", "") or "").strip():
            return
        from pynetdicom.dimse_primitives import C_STORE

        rsp: Any = C_STORE()
        rsp.MessageIDBeingRespondedTo = int(cmd.MessageID)
        rsp.AffectedSOPClassUID = str(cmd.get("AffectedSOPClassUID", "") or "") or None
        rsp.Status = STATUS_CANNOT_UNDERSTAND
        rsp.ErrorComment = "no Affected SOP Instance UID"
        evt.assoc.dimse.send_msg(rsp, evt.message.context_id)
        log.warning("C-STORE refused: request without Affected SOP Instance UID",
                    calling_ae=str(evt.assoc.requestor.ae_title).strip(),
                    status=hex(STATUS_CANNOT_UNDERSTAND))
    except Exception as exc:  # noqa: BLE001 - never raise into pynetdicom's reactor
        log.error("invalid C-STORE request could not be answered", error=describe(exc))


class StoreHandler:
    """EVT_C_STORE: validate, write durably to the spool, answer 0x0000; the index row follows
    from the background :class:`IndexWriter`."""

    def __init__(self, spool: Spool, indexer: IndexWriter,
                 accepted_modalities: tuple[str, ...]) -> None:
        self.spool = spool
        self.indexer = indexer
        self.accepted_modalities = accepted_modalities

    def __call__(self, evt: Any) -> Dataset:
        try:
            return self._handle(evt)
        except Exception as exc:  # noqa: BLE001 - a handler answers, never raises
            log.error("C-STORE failed unexpectedly", sop_instance_uid=_request_uid(evt),
                      error=describe(exc))
            return status(STATUS_PROCESSING_FAILURE, "internal error, see node log")

    def _handle(self, evt: Any) -> Dataset:
        req = evt.request
        affected_uid = str(req.AffectedSOPInstanceUID or "")
        calling = str(evt.assoc.requestor.ae_title).strip()
        tsyntax = UID(str(evt.context.transfer_syntax))
        encoded: bytes = req.DataSet.getvalue()
        try:
            ds = evt.dataset
            stream = zlib.decompress(encoded, -zlib.MAX_WBITS) if tsyntax.is_deflated else encoded
            verdict: Accepted | Rejected = check_dataset(
                ds, affected_sop_class=str(req.AffectedSOPClassUID),
                affected_sop_instance=affected_uid, accepted_modalities=self.accepted_modalities,
                stream=stream, compressed=tsyntax.is_compressed)
        except Exception as exc:  # noqa: BLE001 - any decoding error means "cannot understand"
            log.warning("C-STORE refused: dataset cannot be decoded",
                        sop_instance_uid=affected_uid, calling_ae=calling,
                        error=describe(exc))  # a decoder's message may quote values
            return status(STATUS_CANNOT_UNDERSTAND, "dataset cannot be decoded")
        if isinstance(verdict, Rejected):
            log.warning("C-STORE refused", reason=verdict.reason, status=hex(verdict.status),
                        sop_instance_uid=affected_uid, calling_ae=calling)
            return status(verdict.status, verdict.reason)

        key = SpoolKey(verdict.study_uid, verdict.series_uid, verdict.sop_uid)
        meta = encode_file_meta(str(req.AffectedSOPClassUID), affected_uid, str(tsyntax),
                                calling or "UNKNOWN")
        # The file first (written, fsync'ed, filed): once it is durable the instance is ours and
        # is acknowledged. The index row is written by the background IndexWriter (batched, off
        # the critical path, no database lock held here). A crash before the row is committed
        # leaves a file without a row, which the start-up reconciliation indexes.
        try:
            stored = self.spool.store(key, (meta, encoded))
        except SpoolFullError as exc:
            log.error("C-STORE refused: spool disk full", sop_instance_uid=key.sop_uid,
                      spool=str(self.spool.root), error=str(exc))
            return status(STATUS_OUT_OF_RESOURCES, "out of resources: spool disk full")
        except OSError as exc:
            log.error("C-STORE refused: cannot write to spool", sop_instance_uid=key.sop_uid,
                      error=str(exc))
            return status(STATUS_OUT_OF_RESOURCES, "out of resources: spool write failed")
        if stored.created:
            self.indexer.submit(InstanceRecord(
                study_uid=key.study_uid, series_uid=key.series_uid, sop_uid=key.sop_uid,
                sop_class_uid=verdict.sop_class_uid, transfer_syntax_uid=str(tsyntax),
                modality=verdict.modality, instance_number=verdict.instance_number,
                relpath=str(key.relpath()), size=stored.size, calling_ae=calling,
            ), time.time())
        else:  # the first copy stays: index it as spooled (if a crash left it without a row)
            self.indexer.submit_spooled(key, stored.path, time.time())
            _report_duplicate(stored.path, encoded, evt, key.sop_uid)
        what = "instance stored" if stored.created else "duplicate instance (kept the first copy)"
        log.info(what,
                 sop_instance_uid=key.sop_uid, series_instance_uid=key.series_uid,
                 study_instance_uid=key.study_uid, modality=verdict.modality,
                 transfer_syntax=str(tsyntax), bytes=stored.size, calling_ae=calling)
        return status(STATUS_SUCCESS)


def differing_keywords(kept: Dataset, received: Dataset, limit: int = 20) -> list[str]:
    """Keywords (never values) of the top-level elements that differ between two copies."""
    tags = sorted(set(kept.keys()) | set(received.keys()))
    out = []
    for tag in tags:
        a, b = kept.get(tag), received.get(tag)
        if a is None or b is None or a.value != b.value:
            out.append((a or b).keyword or str(tag))
            if len(out) >= limit:
                break
    return out


def _report_duplicate(path: Any, encoded: bytes, evt: Any, sop_uid: str) -> None:
    """A second copy of a SOP instance is not stored; when its content differs from the kept
    copy that is worth a WARNING naming what differs (keywords only)."""
    try:
        kept_bytes = path.read_bytes()
        if kept_bytes.endswith(encoded):
            return  # the same data set, byte for byte
        import pydicom

        kept = pydicom.dcmread(path)
        differ = differing_keywords(kept, evt.dataset)
        if differ:
            log.warning("duplicate SOP instance with different content: the first copy was "
                        "kept", sop_instance_uid=sop_uid, differs=differ)
    except Exception as exc:  # noqa: BLE001 - only a log line; the C-STORE succeeded
        log.warning("duplicate SOP instance could not be compared", sop_instance_uid=sop_uid,
                    error=describe(exc))


def _request_uid(evt: Any) -> str:
    try:
        return str(evt.request.AffectedSOPInstanceUID or "")
    except Exception:  # noqa: BLE001 - only used for a log line
        return ""
