"""Deleting what the plan says, and saying so in the database: the I/O of retention.

Per series (or result object): re-check that it is still settled (a new instance, a re-armed
delivery may have arrived since the round was planned), delete the files, then mark the rows
whose files are gone (``instances.purged_at``, ``series.purged_at`` when nothing of the series
is left, ``outbox_objects.purged_at``) and write a ``retention_log`` row. Files first: a crash
in between leaves rows that still say "present" for files already gone, which the next round
finds missing and marks; never a row that says "purged" beside a file still there. A file that
cannot be deleted is logged and kept (its row too), so the next round tries again.

Empty series and study folders are removed after their files (the spool files a concurrent
C-STORE of the series makes the folder again: :meth:`osteo_node.store.spool.Spool.store`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import structlog
from sqlalchemy import Connection, Engine, case, exists, insert, select, update

from osteo_node.outbox.tables import outbox_objects
from osteo_node.retention.facts import (
    ObjectKey,
    SeriesKey,
    naive_utc,
    outbox_candidates,
    spool_candidates,
)
from osteo_node.retention.tables import OUTBOX, SPOOL, retention_log
from osteo_node.store.index import instances, series

log = structlog.get_logger(__name__)

T = TypeVar("T")
CHUNK = 500  # ids per UPDATE ... IN (...)


@dataclass(frozen=True)
class Stamp:
    """How a deletion is recorded: when, why, by which round."""

    now: float  # epoch s
    reason: str  # age | size
    run_id: int | None = None


@dataclass(frozen=True)
class Purged:
    """What deleting one series' (or object's) files did."""

    files: int  # files deleted now
    bytes: int  # their bytes
    missing: int = 0  # files already gone (marked too)
    errors: int = 0  # files that could not be deleted (kept, tried again next round)
    complete: bool = True  # nothing of it is left


def remove_file(path: Path) -> bool:
    """Delete ``path``: True when deleted, False when it was not there. Other errors raise."""
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def remove_empty_folders(folders: Iterable[Path], root: Path) -> None:
    """Remove each folder and then its parents up to (not including) ``root`` while empty."""
    root = root.resolve()
    for folder in sorted(set(folders), key=lambda p: len(p.parts), reverse=True):
        current = folder.resolve()
        while current != root and root in current.parents:
            try:
                current.rmdir()
            except OSError:  # not empty (a new file arrived), or gone already
                break
            current = current.parent


def _chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _error(exc: OSError) -> str:
    """An OS error without its message (which names the path)."""
    return f"{type(exc).__name__} errno {exc.errno}"


def _log_row(conn: Connection, **values: object) -> None:
    conn.execute(insert(retention_log).values(**values))


def purge_series(engine: Engine, spool_root: Path, key: SeriesKey, stamp: Stamp
                 ) -> Purged | None:
    """Delete the spool files of a settled series and mark them purged. None: the series is
    not settled any more (or has no files left), nothing was deleted."""
    with engine.connect() as conn:
        # the rows first, then the check: an instance that arrives after the check is not
        # among the rows, and one that arrived before them started a new generation (not
        # settled any more)
        rows = conn.execute(
            select(instances.c.id, instances.c.sop_instance_uid, instances.c.path,
                   instances.c.size)
            .where(instances.c.series_id == key.series_id, instances.c.purged_at.is_(None))
        ).all()
        fresh = spool_candidates(conn, key.series_id)
    if not rows or not fresh or not fresh[0].settled:
        log.info("retention_series_kept", series_instance_uid=key.series_uid,
                 blocker=fresh[0].blocker if fresh else "purged_already")
        return None
    gone: list[int] = []
    removed = removed_bytes = missing = errors = 0
    for r in rows:
        try:
            if remove_file(spool_root / r.path):
                removed += 1
                removed_bytes += int(r.size)
            else:
                missing += 1
            gone.append(r.id)
        except OSError as exc:
            errors += 1
            log.error("retention_delete_failed", area=SPOOL, series_instance_uid=key.series_uid,
                      sop_instance_uid=r.sop_instance_uid, error=_error(exc))
    complete = _mark_series(engine, key, gone, stamp, (removed, removed_bytes))
    remove_empty_folders({(spool_root / r.path).parent for r in rows}, spool_root)
    purged = Purged(removed, removed_bytes, missing, errors, complete)
    log.info("retention_series_purged", series_instance_uid=key.series_uid,
             study_instance_uid=key.study_uid, reason=stamp.reason, files=removed,
             bytes=removed_bytes, already_missing=missing, errors=errors, complete=complete)
    return purged


def _mark_series(engine: Engine, key: SeriesKey, gone: list[int], stamp: Stamp,
                 removed: tuple[int, int]) -> bool:
    """Mark the instances whose files are gone, subtract them from the series' spool bytes,
    mark the series when nothing of it is left (True then); log ``removed`` (files, bytes)."""
    now = stamp.now
    with engine.begin() as conn:
        sizes: list[int] = []  # of the rows marked now (not by a concurrent round)
        for chunk in _chunks(gone):
            sizes += [int(s) for s in conn.execute(
                update(instances)
                .where(instances.c.id.in_(chunk), instances.c.purged_at.is_(None))
                .values(purged_at=now).returning(instances.c.size)).scalars()]
        freed = sum(sizes)
        if freed:
            conn.execute(update(series).where(series.c.id == key.series_id).values(
                spool_bytes=case((series.c.spool_bytes > freed, series.c.spool_bytes - freed),
                                 else_=0)))
        left = exists().where(instances.c.series_id == key.series_id,
                              instances.c.purged_at.is_(None))
        complete = conn.execute(
            update(series).where(series.c.id == key.series_id, ~left)
            .values(purged_at=now, spool_bytes=0)).rowcount == 1
        if sizes:
            _log_row(conn, run_id=stamp.run_id, purged_at=now, area=SPOOL, reason=stamp.reason,
                     study_instance_uid=key.study_uid, series_instance_uid=key.series_uid,
                     sop_instance_uid=None, files=removed[0], bytes=removed[1])
    return complete


def purge_object(engine: Engine, outbox_dir: Path, key: ObjectKey, stamp: Stamp
                 ) -> Purged | None:
    """Delete the outbox file of a settled result object and mark it purged. None: not
    settled any more (a delivery was re-armed), nothing was deleted."""
    with engine.connect() as conn:
        fresh = outbox_candidates(conn, key.sop_uid)
    if not fresh or not fresh[0].settled:
        log.info("retention_object_kept", sop_instance_uid=key.sop_uid,
                 blocker=fresh[0].blocker if fresh else "purged_already")
        return None
    size = fresh[0].size
    path = outbox_dir / key.rel_path
    try:
        removed = remove_file(path)
    except OSError as exc:
        log.error("retention_delete_failed", area=OUTBOX, sop_instance_uid=key.sop_uid,
                  error=_error(exc))
        return Purged(0, 0, errors=1, complete=False)
    with engine.begin() as conn:
        marked = conn.execute(
            update(outbox_objects)
            .where(outbox_objects.c.sop_instance_uid == key.sop_uid,
                   outbox_objects.c.purged_at.is_(None))
            .values(purged_at=naive_utc(stamp.now))).rowcount == 1
        if marked:
            _log_row(conn, run_id=stamp.run_id, purged_at=stamp.now, area=OUTBOX,
                     reason=stamp.reason,
                     study_instance_uid=key.study_uid, series_instance_uid=None,
                     sop_instance_uid=key.sop_uid, files=int(removed),
                     bytes=size if removed else 0)
    remove_empty_folders([path.parent], outbox_dir)
    log.info("retention_object_purged", sop_instance_uid=key.sop_uid,
             study_instance_uid=key.study_uid, reason=stamp.reason,
             bytes=size if removed else 0,
             already_missing=not removed)
    return Purged(int(removed), size if removed else 0, missing=int(not removed))
