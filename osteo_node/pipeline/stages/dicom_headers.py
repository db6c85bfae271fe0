"""DICOM files of a series: listing, header reading (no pixel data) and instance UIDs."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError


@dataclass(frozen=True)
class SliceHeader:
    """A slice's file and its header (read without pixel data)."""

    path: Path
    ds: Dataset


def list_files(paths: Path | Sequence[Path]) -> list[Path]:
    """A folder (searched recursively, any file names) or an explicit list of files."""
    if isinstance(paths, Path | str):
        root = Path(paths)
        if root.is_dir():
            return sorted(p for p in root.rglob("*") if p.is_file() and p.name != "DICOMDIR")
        return [root]
    out: list[Path] = []
    for p in paths:
        out.extend(list_files(Path(p)) if Path(p).is_dir() else [Path(p)])
    return out


def read_headers(files: Iterable[Path]) -> tuple[list[SliceHeader], list[str]]:
    """Read DICOM headers (no pixel data). Returns the headers and the files skipped, with why."""
    headers: list[SliceHeader] = []
    skipped: list[str] = []
    for f in files:
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
            skipped.append(f"{f.name}: not readable as DICOM ({exc.__class__.__name__})")
            continue
        headers.append(SliceHeader(f, ds))
    return headers, skipped


def sop_class_of(ds: Dataset) -> str:
    """SOPClassUID, falling back to the file meta's MediaStorageSOPClassUID when empty."""
    uid = str(ds.get("SOPClassUID", "") or "")
    if not uid and hasattr(ds, "file_meta"):
        uid = str(ds.file_meta.get("MediaStorageSOPClassUID", "") or "")
    return uid


def sop_instance_of(ds: Dataset) -> str:
    uid = str(ds.get("SOPInstanceUID", "") or "")
    if not uid and hasattr(ds, "file_meta"):
        uid = str(ds.file_meta.get("MediaStorageSOPInstanceUID", "") or "")
    return uid
