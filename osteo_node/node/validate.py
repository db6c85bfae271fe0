"""Checks of a received C-STORE dataset before it is spooled (pure functions)."""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

from osteo_node.node.sop_classes import NON_IMAGE
from osteo_node.store.spool import valid_uid

# C-STORE failure statuses (PS3.4 B.2.3).
STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_DATASET_MISMATCH = 0xA900  # Data Set does not match SOP Class
STATUS_CANNOT_UNDERSTAND = 0xC000
STATUS_PROCESSING_FAILURE = 0x0110

PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


@dataclass(frozen=True)
class Accepted:
    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    modality: str
    instance_number: int | None


@dataclass(frozen=True)
class Rejected:
    status: int
    reason: str


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


SEQUENCE_DELIMITERS = (b"\xfe\xff\xdd\xe0\x00\x00\x00\x00",  # little endian
                       b"\xff\xfe\xe0\xdd\x00\x00\x00\x00")  # big endian
UNDEFINED_LENGTH = 0xFFFFFFFF


def encoding_complete(ds: Dataset, stream: bytes | None) -> bool:
    """False when the received encoding ends inside an element (a truncated dataset).

    pydicom reads a short last value without complaint, so check the last top-level element:
    a defined length must be fully present; an undefined length (sequence, encapsulated pixel
    data) must be closed by its sequence delimiter. ``stream`` is the (inflated) dataset
    encoding; None skips the delimiter check.
    """
    if len(ds) == 0:
        return False
    last = ds.get_item(max(ds.keys()))
    if not isinstance(last, RawDataElement):
        return True
    value_len = len(last.value) if last.value is not None else 0
    if last.length != UNDEFINED_LENGTH:
        return value_len == last.length
    if stream is None:
        return True
    end = last.value_tell + value_len
    delim = stream[end:end + 8]
    return delim in SEQUENCE_DELIMITERS


def native_pixel_bytes(ds: Dataset) -> int | None:
    """Bytes that native (uncompressed) Pixel Data must hold, or None if not computable."""
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        bits = int(ds.BitsAllocated)
        spp = int(ds.get("SamplesPerPixel", 1))
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (AttributeError, TypeError, ValueError):
        return None
    total_bits = rows * cols * spp * frames * bits
    return (total_bits + 7) // 8


@dataclass(frozen=True)
class _KeyUids:
    sop_class: str
    sop_uid: str
    study_uid: str
    series_uid: str

    @classmethod
    def read(cls, ds: Dataset) -> _KeyUids:
        return cls(_text(ds, "SOPClassUID"), _text(ds, "SOPInstanceUID"),
                   _text(ds, "StudyInstanceUID"), _text(ds, "SeriesInstanceUID"))


def _uid_problem(uids: _KeyUids) -> Rejected | None:
    """The first key UID that is missing, empty or malformed."""
    for keyword, value in (("SOPInstanceUID", uids.sop_uid),
                           ("StudyInstanceUID", uids.study_uid),
                           ("SeriesInstanceUID", uids.series_uid),
                           ("SOPClassUID", uids.sop_class)):
        if not value:
            return Rejected(STATUS_DATASET_MISMATCH, f"{keyword} is missing or empty")
        if not valid_uid(value):
            return Rejected(STATUS_DATASET_MISMATCH, f"{keyword} is not a valid UID")
    return None


def _affected_problem(uids: _KeyUids, affected_sop_class: str,
                      affected_sop_instance: str) -> Rejected | None:
    """The dataset's SOP Class / Instance UIDs must be the C-STORE request's."""
    if uids.sop_class != affected_sop_class:
        return Rejected(STATUS_DATASET_MISMATCH,
                        "SOPClassUID differs from the C-STORE Affected SOP Class UID")
    if uids.sop_uid != affected_sop_instance:
        return Rejected(STATUS_DATASET_MISMATCH,
                        "SOPInstanceUID differs from the C-STORE Affected SOP Instance UID")
    return None


def _modality_problem(modality: str, accepted_modalities: tuple[str, ...]) -> Rejected | None:
    if not modality:
        return Rejected(STATUS_DATASET_MISMATCH, "Modality is missing")
    if modality not in accepted_modalities:
        return Rejected(STATUS_CANNOT_UNDERSTAND, f"modality {modality} is not accepted")
    return None


def _pixel_problem(ds: Dataset, sop_class: str, compressed: bool) -> Rejected | None:
    """An image needs pixel data; native Pixel Data must be as long as its attributes say."""
    if sop_class in NON_IMAGE:
        return None
    if not any(k in ds for k in PIXEL_KEYWORDS):
        return Rejected(STATUS_DATASET_MISMATCH, "image without pixel data")
    if "PixelData" in ds and not compressed:
        need = native_pixel_bytes(ds)
        elem = ds.get_item("PixelData")
        have = elem.length if isinstance(elem, RawDataElement) else len(elem.value)
        if need is not None and have < need:
            return Rejected(STATUS_DATASET_MISMATCH,
                            f"pixel data too short ({have} < {need} bytes)")
    return None


def _instance_number(ds: Dataset) -> int | None:
    """Instance Number as an int; None when absent, empty or not a number."""
    try:
        raw_number = ds.get("InstanceNumber")
        return int(raw_number) if raw_number not in (None, "") else None
    except (TypeError, ValueError):
        return None


def check_dataset(ds: Dataset, *, affected_sop_class: str, affected_sop_instance: str,
                  accepted_modalities: tuple[str, ...], stream: bytes | None = None,
                  compressed: bool = False) -> Accepted | Rejected:
    """Validate a received dataset: complete encoding, key UIDs, modality, pixel data.

    The checks run in that order and the first problem decides the status.
    The caller maps any exception raised while parsing to "cannot understand".
    """
    if not encoding_complete(ds, stream):
        return Rejected(STATUS_CANNOT_UNDERSTAND, "dataset is truncated")
    uids = _KeyUids.read(ds)
    rejected = _uid_problem(uids) or _affected_problem(uids, affected_sop_class,
                                                       affected_sop_instance)
    if rejected is not None:
        return rejected
    modality = _text(ds, "Modality").upper()  # read only once the UIDs are known good
    rejected = (_modality_problem(modality, accepted_modalities)
                or _pixel_problem(ds, uids.sop_class, compressed))
    if rejected is not None:
        return rejected
    return Accepted(uids.study_uid, uids.series_uid, uids.sop_uid, uids.sop_class, modality,
                    _instance_number(ds))
