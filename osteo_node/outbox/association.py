"""One association to a destination and one C-STORE over it, each ending in a plain result.

:func:`associate` gives an established association or the reason why there is none;
:func:`store_item` sends one claimed item and gives a :class:`StoreOutcome` (never raises for a
peer's answer or a bad outbox file). Neither touches the outbox tables.
"""

from __future__ import annotations

import ssl
import threading
from dataclasses import dataclass

import numpy as np
import structlog
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext

from osteo_node.outbox.claims import ClaimedItem
from osteo_node.outbox.contexts import UNCOMPRESSED, presentation_contexts
from osteo_node.outbox.policy import Destination, Timeouts

log = structlog.get_logger(__name__)

#: C-STORE warning statuses (Part 4 B.2.3): the object was stored.
WARNING_STATUSES = frozenset({0x0001, 0xB000, 0xB006, 0xB007})


@dataclass(frozen=True)
class StoreOutcome:
    """How one delivery attempt ended: ``ok`` (stored, maybe with a warning ``reason``) or not;
    ``permanent``: retrying cannot help (the item fails at once)."""

    ok: bool
    status: int | None
    reason: str | None
    permanent: bool = False


def _application_entity(dest: Destination, timeouts: Timeouts) -> AE:
    ae = AE(ae_title=dest.calling_ae_title)
    ae.connection_timeout = timeouts.connect
    ae.acse_timeout = timeouts.acse
    ae.dimse_timeout = timeouts.dimse
    ae.network_timeout = timeouts.network
    return ae


def _tls_args(dest: Destination) -> tuple[ssl.SSLContext, str] | None:
    """pynetdicom's ``tls_args`` for the destination (None: plain TCP); may raise OSError /
    ValueError for unreadable certificates, which the caller reports."""
    if dest.tls is None:
        return None
    return (dest.tls.ssl_context(), dest.tls.server_hostname or dest.host)


def _why_not_established(dest: Destination, assoc: Association,
                         contexts: list[PresentationContext], connected: bool,
                         tls: bool) -> str:
    """The reason an association request did not give an association."""
    if not connected:
        why = "refused or timed out"
        if tls:
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


def associate(dest: Destination, items: list[ClaimedItem], timeouts: Timeouts) -> Association | str:
    """An established association proposing the contexts ``items`` need, or the reason why
    there is none."""
    ae = _application_entity(dest, timeouts)
    contexts = presentation_contexts(items)
    connected = threading.Event()
    handlers: list[evt.EventHandlerType] = [(evt.EVT_CONN_OPEN, lambda _event: connected.set())]
    try:
        tls_args = _tls_args(dest)
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
    return _why_not_established(dest, assoc, contexts, connected.is_set(), bool(tls_args))


def accepted_pairs(assoc: Association) -> set[tuple[str, str]]:
    """The association's accepted (SOP class, transfer syntax) pairs."""
    return {
        (str(cx.abstract_syntax), str(cx.transfer_syntax[0]))
        for cx in assoc.accepted_contexts
        if cx.transfer_syntax
    }


def _fit_to_accepted(ds: Dataset, it: ClaimedItem, ts: UID,
                     accepted: set[tuple[str, str]]) -> StoreOutcome | None:
    """Make ``ds`` sendable over an accepted context (decoding it if the peer takes only
    uncompressed), or the outcome when no context fits."""
    if (it.sop_class_uid, str(ts)) in accepted:
        return None
    fallback = [u for u in UNCOMPRESSED if (it.sop_class_uid, str(u)) in accepted]
    if not fallback:
        return StoreOutcome(
            False,
            None,
            f"peer accepted no presentation context for SOP class {it.sop_class_uid}",
        )
    if ts.is_compressed:
        # The peer takes only uncompressed: send it decoded, keeping its UID.
        decode_in_place(ds)
    return None


def decode_in_place(ds: Dataset) -> None:
    """Decode compressed pixel data to Explicit VR Little Endian, keeping the SOP Instance UID.

    A 1-bit image (a BINARY Segmentation) is packed again, 8 pixels per byte: pydicom's
    ``decompress`` writes one byte per pixel, which a reader of a 1-bit object would take for
    eight times as many frames."""
    if int(ds.get("BitsAllocated", 8)) != 1:
        ds.decompress(generate_instance_uid=False)
        return
    from pydicom.pixels import pack_bits
    from pydicom.uid import ExplicitVRLittleEndian

    frames = ds.pixel_array
    ds.PixelData = pack_bits(np.ascontiguousarray(frames).ravel())
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian


def _response_outcome(status: Dataset) -> StoreOutcome:
    """The outcome of a C-STORE response (an empty one: no response arrived)."""
    if "Status" not in status:
        return StoreOutcome(False, None, "no C-STORE response (timeout or association aborted)")
    code = int(status.Status)
    comment = status.get("ErrorComment")
    if code == 0x0000:
        return StoreOutcome(True, code, None)
    if code in WARNING_STATUSES:
        return StoreOutcome(True, code, f"stored with warning 0x{code:04X}")
    reason = f"C-STORE status 0x{code:04X}" + (f": {comment}" if comment else "")
    return StoreOutcome(False, code, reason)


def store_item(
    assoc: Association,
    accepted: set[tuple[str, str]],
    it: ClaimedItem,
    msg_id: int,
) -> StoreOutcome:
    """C-STORE one item; ``accepted``: the association's (SOP class, syntax) pairs."""
    ts = UID(it.transfer_syntax_uid)
    try:
        ds: Dataset = dcmread(it.path)
        refused = _fit_to_accepted(ds, it, ts, accepted)
        if refused is not None:
            return refused
        status = assoc.send_c_store(ds, msg_id=msg_id)
    except (OSError, InvalidDicomError) as exc:
        return StoreOutcome(False, None, f"cannot read outbox file: {exc}", permanent=True)
    except (ValueError, AttributeError, RuntimeError, NotImplementedError) as exc:
        return StoreOutcome(False, None, f"cannot send: {type(exc).__name__}: {exc}")
    return _response_outcome(status)
