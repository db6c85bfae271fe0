"""Result objects as durable DICOM Part-10 files in the outbox folder.

An object is encoded (or, for a file given by path, copied byte for byte), written to a temporary
file in the destination folder, fsynced, renamed into place and the folder fsynced, so after a
crash the file is either complete or absent.
"""

from __future__ import annotations

import copy
import hashlib
import os
import re
import secrets
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian

_UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")

#: SOP classes of the result objects and their kind (used when ``kind`` is not given).
KIND_BY_SOP_CLASS: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.88.11": "sr",  # Basic Text SR
    "1.2.840.10008.5.1.4.1.1.88.22": "sr",  # Enhanced SR
    "1.2.840.10008.5.1.4.1.1.88.33": "sr",  # Comprehensive SR
    "1.2.840.10008.5.1.4.1.1.88.34": "sr",  # Comprehensive 3D SR
    "1.2.840.10008.5.1.4.1.1.66.4": "seg",  # Segmentation
    "1.2.840.10008.5.1.4.1.1.7": "sc",  # Secondary Capture
    "1.2.840.10008.5.1.4.1.1.7.1": "sc",  # Multi-frame Single Bit SC
    "1.2.840.10008.5.1.4.1.1.7.2": "sc",  # Multi-frame Grayscale Byte SC
    "1.2.840.10008.5.1.4.1.1.7.3": "sc",  # Multi-frame Grayscale Word SC
    "1.2.840.10008.5.1.4.1.1.7.4": "sc",  # Multi-frame True Color SC
    "1.2.840.10008.5.1.4.1.1.88.59": "kos",  # Key Object Selection Document
}


class OutboxInputError(ValueError):
    """An object cannot be put into the outbox (unreadable, missing UIDs, unknown kind)."""


@dataclass(frozen=True)
class EncodedObject:
    """A result object ready to be written: its Part-10 bytes and the identifying UIDs."""

    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    study_instance_uid: str | None
    series_instance_uid: str | None
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    def kind(self, explicit: str | None = None) -> str:
        if explicit is not None:
            return explicit
        try:
            return KIND_BY_SOP_CLASS[self.sop_class_uid]
        except KeyError:
            raise OutboxInputError(
                f"cannot tell the result kind of SOP class {self.sop_class_uid} "
                f"(SOP Instance UID {self.sop_instance_uid}); pass kind= explicitly"
            ) from None


def check_uid(value: object, what: str) -> str:
    text = str(value or "").strip()
    if not text or len(text) > 64 or not _UID_RE.match(text):
        raise OutboxInputError(f"{what} {text!r} is not a valid DICOM UID")
    return text


def _optional_uid(ds: Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    if value in (None, ""):
        return None
    return check_uid(value, keyword)


def encode_object(obj: Dataset | str | os.PathLike[str]) -> EncodedObject:
    """Part-10 bytes of a dataset, or the exact bytes of a Part-10 file."""
    if isinstance(obj, Dataset):
        return _encode_dataset(obj)
    path = Path(obj)
    try:
        data = path.read_bytes()
        ds = dcmread(BytesIO(data), stop_before_pixels=True)
    except (OSError, InvalidDicomError) as exc:
        raise OutboxInputError(f"cannot read DICOM file {path.name}: {exc}") from exc
    meta = getattr(ds, "file_meta", None)
    if meta is None or "TransferSyntaxUID" not in meta or data[128:132] != b"DICM":
        # Not a Part-10 file: decode fully and re-encode with a file meta header.
        try:
            return _encode_dataset(dcmread(BytesIO(data), force=True))
        except (InvalidDicomError, ValueError, AttributeError) as exc:
            raise OutboxInputError(f"cannot read DICOM file {path.name}: {exc}") from exc
    return _describe(ds, str(meta.TransferSyntaxUID), data)


def _encode_dataset(ds: Dataset) -> EncodedObject:
    sop_uid = check_uid(ds.get("SOPInstanceUID"), "SOP Instance UID")
    sop_class = check_uid(ds.get("SOPClassUID"), "SOP Class UID")
    out = copy.copy(ds)  # shallow: the caller's file meta is left untouched
    meta = FileMetaDataset()
    for elem in getattr(ds, "file_meta", None) or []:
        meta.add(copy.deepcopy(elem))
    if "TransferSyntaxUID" not in meta:
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    if "ImplementationClassUID" not in meta:
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    out.file_meta = meta
    buf = BytesIO()
    try:
        out.save_as(buf, enforce_file_format=True)
    except (ValueError, TypeError, AttributeError, OverflowError) as exc:
        raise OutboxInputError(f"cannot encode SOP Instance {sop_uid}: {exc}") from exc
    return _describe(ds, str(meta.TransferSyntaxUID), buf.getvalue())


def _describe(ds: Dataset, transfer_syntax: str, data: bytes) -> EncodedObject:
    return EncodedObject(
        sop_instance_uid=check_uid(ds.get("SOPInstanceUID"), "SOP Instance UID"),
        sop_class_uid=check_uid(ds.get("SOPClassUID"), "SOP Class UID"),
        transfer_syntax_uid=check_uid(transfer_syntax, "Transfer Syntax UID"),
        study_instance_uid=_optional_uid(ds, "StudyInstanceUID"),
        series_instance_uid=_optional_uid(ds, "SeriesInstanceUID"),
        data=data,
    )


def relative_path(obj: EncodedObject) -> Path:
    """Where an object lives inside the outbox folder (UIDs are checked, so no traversal)."""
    return Path(obj.study_instance_uid or "no-study") / f"{obj.sop_instance_uid}.dcm"


def write_durably(target: Path, data: bytes) -> None:
    """Write ``data`` to ``target`` atomically: temp file, fsync, rename, fsync the folder."""
    tmp = target.parent / f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    for attempt in range(3):
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
            break
        except FileNotFoundError:  # retention removed the empty folder meanwhile: make it again
            if attempt == 2:
                raise
    try:
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
