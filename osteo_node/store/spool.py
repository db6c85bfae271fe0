"""The spool: received instances as DICOM files, written durably with one fsync each.

Layout: ``<spool>/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``.

Durability with a single fsync per instance (the C-STORE is acknowledged after
:meth:`Spool.store` returns):

1. Each instance is written into a *slot*: an empty file pre-created in ``<spool>/.slots``
   whose directory entry was already made durable (slots are created in batches, one directory
   fsync per batch, ahead of need). Writing and fsync'ing the slot makes the content durable
   under a name that is already durable, so no directory fsync is needed before the ack.
2. The slot is then filed under its final name with ``link(slot, final)`` + ``unlink(slot)``
   (the link becomes durable with the next journal commit or the background
   :meth:`Spool.sync_dirty`). ``link`` never replaces an existing file: when two copies of the
   same SOP instance arrive at once, the first one filed wins and the other slot is emptied.
   After a crash the complete content is under one of the two names (or both: recovery then
   drops the slot).
3. The 128-byte File Preamble (free for implementation use, PS3.10 7.1) carries a marker, the
   length and a CRC-32 of the rest of the file, so :meth:`Spool.recover` can tell a complete
   slot (acknowledged, or about to be) from one torn by a crash (never acknowledged): complete
   slots are filed under their final name, torn ones are emptied for reuse.

The index row is written after :meth:`Spool.store` returns (no database lock is held during
the fsync); :func:`osteo_node.store.reconcile.reconcile_spool` indexes, at start-up, a file
whose row a crash prevented.

A failed write (e.g. ENOSPC) empties the slot again: nothing half-written remains.
"""

from __future__ import annotations

import errno
import os
import re
import struct
import threading
import time
import uuid
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")
SLOTS_DIR = ".slots"
SLOT_BATCH = 64
PREAMBLE_MAGIC = b"OSTEONODE-SPOOL1"
_PREAMBLE = struct.Struct("<16sQI")  # magic, length of the rest of the file, CRC-32 of it


def valid_uid(uid: str) -> bool:
    """A DICOM UID (digits and dots, at most 64 characters): also safe as a file name."""
    return 0 < len(uid) <= 64 and UID_RE.match(uid) is not None


class SpoolFullError(OSError):
    """The spool file system is full (ENOSPC/EDQUOT): the instance was not stored."""


@dataclass(frozen=True)
class SpoolKey:
    study_uid: str
    series_uid: str
    sop_uid: str

    def __post_init__(self) -> None:
        for uid in (self.study_uid, self.series_uid, self.sop_uid):
            if not valid_uid(uid):
                raise ValueError(f"not a valid UID: {uid!r}")

    def relpath(self) -> Path:
        return Path(self.study_uid) / self.series_uid / f"{self.sop_uid}.dcm"


@dataclass(frozen=True)
class StoredFile:
    path: Path
    size: int
    created: bool  # False: the same SOP instance was already in the spool (kept as it was)


def preamble_for(body: Sequence[bytes]) -> bytes:
    """The 128-byte preamble sealing ``body`` (the file after the preamble)."""
    crc = 0
    length = 0
    for chunk in body:
        crc = zlib.crc32(chunk, crc)
        length += len(chunk)
    return _PREAMBLE.pack(PREAMBLE_MAGIC, length, crc).ljust(128, b"\x00")


def sealed_complete(path: Path) -> bool:
    """True when ``path`` starts with our preamble and the rest matches its length and CRC."""
    try:
        with path.open("rb") as f:
            head = f.read(128)
            if len(head) < 128:
                return False
            magic, length, crc = _PREAMBLE.unpack_from(head)
            if magic != PREAMBLE_MAGIC or os.fstat(f.fileno()).st_size != 128 + length:
                return False
            actual = 0
            while chunk := f.read(1 << 20):
                actual = zlib.crc32(chunk, actual)
            return actual == crc
    except OSError:
        return False


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durably(path: Path, chunks: Sequence[bytes], size: int) -> None:
    """Write ``chunks`` into the (empty) file ``path`` and fsync it; on failure empty it again."""
    fd = os.open(path, os.O_WRONLY)
    try:
        written = os.writev(fd, chunks)
        if written != size:  # short write: finish it chunk by chunk
            data = memoryview(b"".join(chunks))[written:]
            while data:
                data = data[os.write(fd, data):]
        os.fsync(fd)
    except BaseException:
        os.ftruncate(fd, 0)
        raise
    finally:
        os.close(fd)


def _classify(exc: OSError) -> OSError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return SpoolFullError(exc.errno, f"spool is full: {exc.strerror}")
    return exc


class Spool:
    """``owner``: the node name of the listener whose slots these are. Listeners on several
    hosts sharing one spool each keep their slots in ``.slots/<owner>``, so one's start-up
    recovery never touches the slots another is writing into."""

    def __init__(self, root: Path, slot_batch: int = SLOT_BATCH, owner: str | None = None
                 ) -> None:
        self.root = root
        self.slots_dir = root / SLOTS_DIR / owner if owner else root / SLOTS_DIR
        self.slot_batch = slot_batch
        self._free: list[Path] = []
        self._dirty: set[Path] = set()
        self._lock = threading.Lock()
        self._last_sync = time.monotonic()

    def path_for(self, key: SpoolKey) -> Path:
        return self.root / key.relpath()

    # ------------------------------------------------------------------ slots

    def _create_slots(self, n: int) -> None:
        """Create ``n`` empty slot files and make their names durable (one directory fsync)."""
        created = []
        try:
            for _ in range(n):
                p = self.slots_dir / f"slot-{uuid.uuid4().hex}"
                os.close(os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640))
                created.append(p)
        finally:
            if created:
                _fsync_dir(self.slots_dir)
                with self._lock:
                    self._free.extend(created)

    def _take_slot(self) -> Path:
        with self._lock:
            if self._free:
                return self._free.pop()
        self._create_slots(self.slot_batch)
        with self._lock:
            return self._free.pop()

    def _return_slot(self, slot: Path) -> None:
        with self._lock:
            self._free.append(slot)

    def maintain(self, sync_interval: float = 5.0) -> None:
        """Background upkeep: refill the slot pool; every ``sync_interval`` seconds fsync the
        directories touched by filing (not needed for durability, see the module doc)."""
        with self._lock:
            missing = self.slot_batch - len(self._free)
        if missing > self.slot_batch // 2:
            try:
                self._create_slots(missing)
            except OSError as exc:
                log.warning("cannot pre-create spool slots", error=str(exc))
        now = time.monotonic()
        if now - self._last_sync >= sync_interval:
            self._last_sync = now
            self.sync_dirty()

    def sync_dirty(self) -> None:
        with self._lock:
            dirty, self._dirty = self._dirty, set()
        for d in sorted(dirty, key=lambda p: len(p.parts), reverse=True):
            try:
                _fsync_dir(d)
            except OSError as exc:
                log.warning("directory fsync failed", directory=str(d), error=str(exc))

    # ------------------------------------------------------------------ store

    def _make_parent(self, final: Path) -> None:
        folder = final.parent
        if folder.is_dir():
            return
        folder.mkdir(parents=True, exist_ok=True)
        with self._lock:
            self._dirty.update({folder.parent, folder.parent.parent})

    def store(self, key: SpoolKey, body: Sequence[bytes]) -> StoredFile:
        """Store ``body`` (``b"DICM"`` + file meta + data set, in chunks) as the file of
        ``key`` unless it is already there (then the spooled copy is kept and ``created`` is
        False). Durable when this returns. Raises :class:`SpoolFullError` when the disk is
        full, ``OSError`` otherwise; in both cases no partial file is left behind.
        """
        final = self.path_for(key)
        if final.is_file():
            return StoredFile(final, final.stat().st_size, created=False)
        chunks = [preamble_for(body), *body]
        size = sum(len(c) for c in chunks)
        try:
            slot = self._take_slot()
        except OSError as exc:  # no room even for an empty slot file
            raise _classify(exc) from exc
        try:
            _write_durably(slot, chunks, size)
        except OSError as exc:
            self._return_slot(slot)
            raise _classify(exc) from exc
        except BaseException:
            self._return_slot(slot)
            raise
        try:
            self._link(slot, final)
        except FileExistsError:
            # Another copy of this instance was filed meanwhile: it stays, this one goes.
            self._empty_slot(slot)
            return StoredFile(final, final.stat().st_size, created=False)
        except OSError as exc:
            # The content is durable in the slot; recovery files it at the next start.
            log.error("cannot file a spooled instance; it stays in its slot",
                      sop_instance_uid=key.sop_uid, slot=slot.name, error=str(exc))
            raise _classify(exc) from exc
        try:
            os.unlink(slot)
        except OSError as exc:  # filed anyway; recovery drops the slot (its final name exists)
            log.warning("cannot remove a filed spool slot", slot=slot.name, error=str(exc))
        with self._lock:
            self._dirty.update({final.parent, self.slots_dir})
        return StoredFile(final, size, created=True)

    def _link(self, slot: Path, final: Path, attempts: int = 3) -> None:
        """File ``slot`` as ``final`` (``link`` never replaces a file), making its folder.
        Retention removes a series folder once it is empty: when that happens between making
        the folder and linking, the folder is made again."""
        for attempt in range(attempts):
            self._make_parent(final)
            try:
                os.link(slot, final)
                return
            except FileNotFoundError:
                if attempt == attempts - 1:
                    raise

    def _empty_slot(self, slot: Path) -> None:
        """Empty a slot whose copy was not filed and put it back in the pool."""
        try:
            os.truncate(slot, 0)
        except OSError as exc:  # left as it is: recovery drops it (its final name exists)
            log.warning("cannot empty a spool slot", slot=slot.name, error=str(exc))
            return
        self._return_slot(slot)

    # ------------------------------------------------------------------ start-up

    def open(self) -> None:
        """Take up the empty slots as the free pool, without recovery: for a process started
        right after :meth:`recover` ran (in another process) and before anything received."""
        self.slots_dir.mkdir(parents=True, exist_ok=True)
        free = [p for p in self.slots_dir.iterdir() if p.is_file() and p.stat().st_size == 0]
        with self._lock:
            self._free = free

    def recover(self) -> tuple[int, int]:
        """At start-up (nothing receiving): file complete slots under their final names, empty
        torn ones. Returns (filed, discarded)."""
        from pydicom import dcmread
        from pydicom.errors import InvalidDicomError

        self.slots_dir.mkdir(parents=True, exist_ok=True)
        self._adopt_shared_slots()
        filed = discarded = 0
        free: list[Path] = []
        for slot in sorted(self.slots_dir.iterdir()):
            if not slot.is_file():
                continue
            if slot.stat().st_size == 0:
                free.append(slot)
                continue
            key: SpoolKey | None = None
            if sealed_complete(slot):
                try:
                    ds = dcmread(slot, stop_before_pixels=True)
                    key = SpoolKey(str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID),
                                   str(ds.SOPInstanceUID))
                except (InvalidDicomError, AttributeError, ValueError, OSError) as exc:
                    log.error("complete slot is not a usable instance", slot=slot.name,
                              error=str(exc))
            if key is None:
                with slot.open("r+b") as f:
                    f.truncate(0)
                free.append(slot)
                discarded += 1
                log.warning("torn spool slot emptied (never acknowledged)", slot=slot.name)
                continue
            final = self.path_for(key)
            if final.exists():
                slot.unlink()
            else:
                self._make_parent(final)
                os.rename(slot, final)
                self._dirty.add(final.parent)
            filed += 1
            log.warning("spooled instance recovered from its slot", sop_instance_uid=key.sop_uid)
        self._dirty.add(self.slots_dir)
        self.sync_dirty()
        with self._lock:
            self._free = free
        return filed, discarded

    def _adopt_shared_slots(self) -> None:
        """Slot files directly in ``.slots`` (made before slots had owners) move into this
        owner's folder, to be recovered with its own (rename is atomic: of two hosts starting
        at once, one takes each)."""
        shared = self.root / SLOTS_DIR
        if self.slots_dir == shared:
            return
        for slot in sorted(shared.iterdir()):  # exists: it holds slots_dir
            if slot.is_file():
                try:
                    os.rename(slot, self.slots_dir / slot.name)
                except FileNotFoundError:
                    continue  # another host took it

    def iter_instances(self) -> Iterator[tuple[SpoolKey, Path]]:
        """All filed instance files (slots are skipped). A folder that retention removes
        meanwhile is skipped."""
        for study in _listdir(self.root):
            if not study.is_dir() or not valid_uid(study.name):
                continue
            for series in _listdir(study):
                if not series.is_dir() or not valid_uid(series.name):
                    continue
                for f in _listdir(series):
                    if f.suffix == ".dcm" and valid_uid(f.stem):
                        yield SpoolKey(study.name, series.name, f.stem), f


def _listdir(folder: Path) -> list[Path]:
    """The sorted entries of ``folder``; none when it does not exist (any more)."""
    try:
        return sorted(folder.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []
