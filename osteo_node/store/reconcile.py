"""Start-up reconciliation: every instance file in the spool is in the index.

The spool is the durable record: an instance file is written, fsync'ed and filed, the C-STORE
is acknowledged, and the index row follows from the listener's background index writer. If the
node died before the row was committed, this re-creates it.
"""

from __future__ import annotations

from pathlib import Path

import structlog
from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from sqlalchemy import Engine

from osteo_node.store.index import InstanceRecord, indexed_sop_uids, record_instance
from osteo_node.store.spool import Spool, SpoolKey

log = structlog.get_logger(__name__)


def reconcile_spool(engine: Engine, spool: Spool) -> int:
    """Index spooled instances missing from the index; returns how many were added."""
    with engine.connect() as conn:
        known = indexed_sop_uids(conn)
    added = 0
    for key, path in spool.iter_instances():
        if key.sop_uid in known:
            continue
        try:
            rec = record_from_file(key, path)
        except (OSError, InvalidDicomError, AttributeError, ValueError) as exc:
            log.error("spooled file unreadable; not indexed", path=str(path), error=str(exc))
            continue
        with engine.begin() as conn:
            if record_instance(conn, rec, path.stat().st_mtime):
                added += 1
                log.warning("re-indexed spooled instance", sop_instance_uid=key.sop_uid)
    return added


def record_from_file(key: SpoolKey, path: Path) -> InstanceRecord:
    """The index record of a spooled instance file, from its header (pixel data not read).

    Raises OSError, InvalidDicomError, AttributeError or ValueError for an unusable file.
    """
    ds = dcmread(path, stop_before_pixels=True)
    return InstanceRecord(
        study_uid=key.study_uid, series_uid=key.series_uid, sop_uid=key.sop_uid,
        sop_class_uid=str(ds.file_meta.MediaStorageSOPClassUID),
        transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
        modality=str(ds.get("Modality", "")).upper(),
        instance_number=_int_or_none(ds.get("InstanceNumber")),
        relpath=str(key.relpath()), size=path.stat().st_size,
        calling_ae=str(ds.file_meta.get("SourceApplicationEntityTitle", "")).strip(),
    )


def _int_or_none(value: object) -> int | None:
    try:
        return int(str(value)) if value not in (None, "") else None
    except ValueError:
        return None
