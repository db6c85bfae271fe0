"""The spool: received instances as DICOM files, written durably.

Layout: ``<spool>/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``. A file is
written as a hidden temp file in its series folder, fsync'ed, renamed atomically to its final
name and the folder is fsync'ed, so after :meth:`Spool.store` returns the instance survives a
crash or power loss (as far as fsync guarantees). A failed write (e.g. ENOSPC) removes the temp
file: nothing half-written remains. Leftover temp files of a crash are removed by
:meth:`Spool.remove_stale_temp_files`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")
TEMP_PREFIX = ".incoming-"


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


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path_for(self, key: SpoolKey) -> Path:
        return self.root / key.relpath()

    def _ensure_dir(self, folder: Path) -> None:
        """Create ``folder`` (and parents) durably: each new directory entry is fsync'ed."""
        if folder.is_dir():
            return
        missing: list[Path] = []
        p = folder
        while not p.exists():
            missing.append(p)
            p = p.parent
        for d in reversed(missing):
            with contextlib.suppress(FileExistsError):
                d.mkdir()
            _fsync_dir(d.parent)

    def store(self, key: SpoolKey, chunks: tuple[bytes, ...]) -> StoredFile:
        """Write ``chunks`` as the file of ``key`` unless it is already there.

        Raises :class:`SpoolFullError` when the disk is full, ``OSError`` otherwise; in both
        cases no partial file is left behind.
        """
        final = self.path_for(key)
        if final.is_file():
            return StoredFile(final, final.stat().st_size, created=False)
        folder = final.parent
        try:
            self._ensure_dir(folder)
        except OSError as exc:
            raise _classify(exc) from exc
        tmp = folder / f"{TEMP_PREFIX}{uuid.uuid4().hex}"
        size = 0
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
            try:
                for chunk in chunks:
                    view = memoryview(chunk)
                    while view:
                        n = os.write(fd, view)
                        view = view[n:]
                        size += n
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, final)
            _fsync_dir(folder)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise _classify(exc) from exc
        return StoredFile(final, size, created=True)

    def iter_instances(self) -> Iterator[tuple[SpoolKey, Path]]:
        """All complete instance files (temp files are skipped)."""
        if not self.root.is_dir():
            return
        for study in sorted(self.root.iterdir()):
            if not study.is_dir() or not valid_uid(study.name):
                continue
            for series in sorted(study.iterdir()):
                if not series.is_dir() or not valid_uid(series.name):
                    continue
                for f in sorted(series.iterdir()):
                    if f.suffix == ".dcm" and valid_uid(f.stem):
                        yield SpoolKey(study.name, series.name, f.stem), f

    def remove_stale_temp_files(self) -> int:
        """Remove temp files left by a crash (call only while nothing is receiving)."""
        n = 0
        if not self.root.is_dir():
            return 0
        for tmp in self.root.glob(f"*/*/{TEMP_PREFIX}*"):
            tmp.unlink(missing_ok=True)
            n += 1
        return n


def _classify(exc: OSError) -> OSError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return SpoolFullError(exc.errno, f"spool is full: {exc.strerror}")
    return exc
