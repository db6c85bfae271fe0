"""The outbox sender: a C-STORE SCU that delivers due outbox items to their destinations.

Per batch it opens ONE association per destination, proposing only the presentation contexts the
batch needs: for each SOP class, the transfer syntax(es) of its stored files, plus Explicit and
Implicit VR Little Endian as fallbacks (a compressed file is decompressed when the peer accepts
only an uncompressed syntax). Each item is marked sent or failed from the returned status; a
failed association or a non-success status is retried with exponential backoff
(:class:`RetryPolicy`) until ``max_attempts``, then the item is ``failed`` with the reason.

Run it as its own process with :func:`run_sender` (the node's supervisor does), or drive an
:class:`OutboxSender` directly (``run_once`` / ``serve``), tuned by :class:`SenderSettings`.
The work is done in :mod:`.contexts` (presentation contexts), :mod:`.association` (association
and C-STORE), :mod:`.delivery` (the sender loop) and :mod:`.process` (the process entry); this
module gathers their public names.
"""

from __future__ import annotations

from osteo_node.outbox.association import WARNING_STATUSES, StoreOutcome
from osteo_node.outbox.contexts import (
    MAX_CONTEXTS,
    UNCOMPRESSED,
    presentation_contexts,
    split_for_contexts,
)
from osteo_node.outbox.delivery import OutboxSender, SendReport
from osteo_node.outbox.policy import SenderSettings, Timeouts
from osteo_node.outbox.process import run_sender

__all__ = [
    "MAX_CONTEXTS",
    "UNCOMPRESSED",
    "WARNING_STATUSES",
    "OutboxSender",
    "SendReport",
    "SenderSettings",
    "StoreOutcome",
    "Timeouts",
    "presentation_contexts",
    "run_sender",
    "split_for_contexts",
]
