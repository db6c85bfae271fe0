"""Deterministic DICOM UIDs for exported objects.

A UID is derived from ``(job_key, purpose)`` with SHA-256, so re-running or re-sending the same
job produces the same Series / SOP Instance UIDs (a PACS then replaces instead of duplicating).
With a configured ``root`` (an organisation's OID) the UID is ``<root>.<decimal digits>``;
without one it is the ``2.25.<128-bit integer>`` form of PS3.5 B.2 (UUID-derived).
"""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass

_ROOT_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
MAX_UID_LEN = 64


def validate_root(root: str) -> str:
    root = root.strip().rstrip(".")
    if not _ROOT_RE.match(root):
        raise ValueError(f"UID root {root!r} is not a dotted numeric OID")
    if len(root) > MAX_UID_LEN - 12:
        raise ValueError(f"UID root {root!r} is too long (leave >= 12 digits for the suffix)")
    return root


def deterministic_uid(job_key: str, purpose: str, root: str | None = None) -> str:
    """UID for ``purpose`` ("sr", "seg-series", ...) of the job identified by ``job_key``."""
    if not job_key:
        raise ValueError("job_key must not be empty")
    digest = hashlib.sha256(f"{job_key}\x00{purpose}".encode()).digest()
    if root is None:
        return f"2.25.{uuid.UUID(bytes=digest[:16], version=5).int}"
    root = validate_root(root)
    room = MAX_UID_LEN - len(root) - 1
    digits = str(int.from_bytes(digest, "big"))[: min(room, 39)].lstrip("0") or "1"
    return f"{root}.{digits}"


@dataclass(frozen=True)
class UidFactory:
    """UIDs of one job: ``uid("sr")``, ``uid("sr-series")``..."""

    job_key: str
    root: str | None = None

    def __post_init__(self) -> None:
        if not self.job_key:
            raise ValueError("job_key must not be empty")
        if self.root is not None:
            validate_root(self.root)

    def uid(self, purpose: str) -> str:
        return deterministic_uid(self.job_key, purpose, self.root)
