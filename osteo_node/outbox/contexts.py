"""Presentation contexts for a batch of delivery items, and splitting a batch to fit them.

Per SOP class the sender proposes the transfer syntax(es) of its stored files, plus Explicit and
Implicit VR Little Endian as fallbacks (a compressed file is decompressed when the peer accepts
only an uncompressed syntax). An association carries at most :data:`MAX_CONTEXTS` contexts.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.presentation import PresentationContext, build_context

from osteo_node.outbox.claims import ClaimedItem

UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
MAX_CONTEXTS = 128  # DICOM limit on presentation contexts per association (odd IDs 1..255)


def presentation_contexts(items: Sequence[ClaimedItem]) -> list[PresentationContext]:
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
    items: Sequence[ClaimedItem], limit: int = MAX_CONTEXTS
) -> list[list[ClaimedItem]]:
    """Split a batch, in order, into chunks whose presentation contexts fit one association
    (each chunk as large as fits). Linear in the batch: the context count is kept per SOP
    class as items are added."""
    chunks: list[list[ClaimedItem]] = []
    chunk: list[ClaimedItem] = []
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
