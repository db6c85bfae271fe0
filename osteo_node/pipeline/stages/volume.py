"""Load a DICOM slice series or a NIfTI file into a :class:`Volume` (HU, LPS geometry).

DICOM: any file names, any transfer syntax pydicom can decode (JPEG 2000 via pylibjpeg-openjpeg).
Slices are ordered by their position along the slice normal (ImagePositionPatient projected on
the normal from ImageOrientationPatient); the slice spacing comes from those positions, never
only from SpacingBetweenSlices/SliceThickness. Duplicate positions, irregular gaps, sheared
(gantry-tilted) stacks, inconsistent slice geometry and missing rescale tags on CT are refused
with a :class:`VolumeError` whose message says exactly what is wrong.

Memory: the float32 array is allocated once and each slice is decoded and rescaled straight into
it (one decoded slice alive at a time), so peak memory is about the volume plus one slice.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import structlog
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from osteo_node.pipeline.types import Geometry, SourceInstance, Volume

log = structlog.get_logger(__name__)

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


class VolumeError(ValueError):
    """The series cannot be turned into a trustworthy volume; the message says why."""


@dataclass(frozen=True)
class LoadTolerances:
    duplicate_position_tolerance_mm: float = 0.01
    max_spacing_irregularity: float = 0.1  # fraction of the median gap
    max_shear_deg: float = 1.0

    @classmethod
    def from_mapping(cls, data: dict[str, Any] | None) -> LoadTolerances:
        data = data or {}
        return cls(**{k: float(v) for k, v in data.items() if k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class SliceHeader:
    """A slice's file and its header (read without pixel data)."""

    path: Path
    ds: Dataset


@dataclass
class LoadedVolume:
    volume: Volume
    warnings: list[str] = field(default_factory=list)


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


def _floats(ds: Dataset, keyword: str, n: int) -> NDArray[np.float64]:
    value = ds.get(keyword)
    if value is None or len(value) != n:
        raise VolumeError(f"{keyword} missing or malformed in slice {sop_instance_of(ds) or '?'}")
    return np.asarray([float(v) for v in value], dtype=np.float64)


@dataclass(frozen=True)
class StackGeometry:
    order: list[int]  # indices into the header list, in increasing position along the normal
    geometry: Geometry
    rows: int
    columns: int
    warnings: list[str]


def stack_geometry(headers: Sequence[Dataset], tol: LoadTolerances | None = None) -> StackGeometry:
    """Order slices and derive the LPS geometry from positions; refuse inconsistent stacks."""
    tol = tol or LoadTolerances()
    if not headers:
        raise VolumeError("no DICOM slices")
    warnings: list[str] = []
    iop = _floats(headers[0], "ImageOrientationPatient", 6)
    row_dir, col_dir = iop[:3], iop[3:]
    normal = np.cross(row_dir, col_dir)
    if abs(np.linalg.norm(normal) - 1.0) > 1e-3 or abs(float(row_dir @ col_dir)) > 1e-3:
        raise VolumeError(f"ImageOrientationPatient {iop.tolist()} is not orthonormal")
    pixel = _floats(headers[0], "PixelSpacing", 2)  # (row spacing, column spacing)
    rows, cols = int(headers[0].get("Rows", 0)), int(headers[0].get("Columns", 0))
    positions = np.empty((len(headers), 3))
    for n, ds in enumerate(headers):
        if not np.allclose(_floats(ds, "ImageOrientationPatient", 6), iop, atol=1e-4):
            raise VolumeError("slices have different ImageOrientationPatient (mixed stacks)")
        if not np.allclose(_floats(ds, "PixelSpacing", 2), pixel, atol=1e-5):
            raise VolumeError("slices have different PixelSpacing")
        if int(ds.get("Rows", 0)) != rows or int(ds.get("Columns", 0)) != cols:
            raise VolumeError("slices have different Rows/Columns")
        positions[n] = _floats(ds, "ImagePositionPatient", 3)
    dist = positions @ normal
    order = [int(i) for i in np.argsort(dist, kind="stable")]
    d_sorted = dist[order]
    if len(order) == 1:
        spacing_k = float(headers[0].get("SliceThickness") or 1.0)
        warnings.append("single slice: slice spacing taken from SliceThickness")
        k_dir = normal
    else:
        gaps = np.diff(d_sorted)
        dup = np.flatnonzero(gaps < tol.duplicate_position_tolerance_mm)
        if dup.size:
            first = order[int(dup[0])]
            raise VolumeError(
                f"duplicate slice positions: {dup.size} slice pair(s) share a position "
                f"(first at {d_sorted[dup[0]]:.2f} mm along the normal, instance "
                f"{headers[first].get('InstanceNumber', '?')}); the series mixes acquisitions "
                "or repeats slices"
            )
        median_gap = float(np.median(gaps))
        deviation = np.abs(gaps - median_gap) / median_gap
        if float(deviation.max()) > tol.max_spacing_irregularity:
            worst = int(np.argmax(deviation))
            raise VolumeError(
                f"irregular slice spacing: gap of {gaps[worst]:.2f} mm between slices "
                f"{worst} and {worst + 1} (median {median_gap:.2f} mm, "
                f"{int((deviation > tol.max_spacing_irregularity).sum())} irregular gap(s)); "
                "missing or extra slices"
            )
        if float(deviation.max()) > 1e-3:
            warnings.append(
                f"slice gaps vary by up to {100 * float(deviation.max()):.1f}% of "
                f"{median_gap:.3f} mm; mean spacing used"
            )
        step = (positions[order[-1]] - positions[order[0]]) / (len(order) - 1)
        spacing_k = float(np.linalg.norm(step))
        k_dir = step / spacing_k
        shear = float(np.degrees(np.arccos(np.clip(abs(k_dir @ normal), -1.0, 1.0))))
        if shear > tol.max_shear_deg:
            raise VolumeError(
                f"sheared slice stack (gantry tilt about {shear:.1f} deg between slice normal "
                "and slice positions); resampling tilted stacks is not supported"
            )
        k_dir = normal  # within tolerance: keep an orthonormal grid
        tag = headers[0].get("SpacingBetweenSlices")
        if tag is not None and abs(abs(float(tag)) - spacing_k) > 0.05 * spacing_k:
            warnings.append(
                f"SpacingBetweenSlices {float(tag)} disagrees with positions ({spacing_k:.3f} mm)"
            )
    direction = np.column_stack([row_dir, col_dir, k_dir])
    geometry = Geometry(
        origin=tuple(float(v) for v in positions[order[0]]),  # type: ignore[arg-type]
        spacing=(float(pixel[1]), float(pixel[0]), spacing_k),
        direction=tuple(float(v) for v in direction.ravel()),
    )
    return StackGeometry(order, geometry, rows, cols, warnings)


def _rescale(ds: Dataset, modality: str) -> tuple[float, float]:
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    if slope is None or intercept is None or str(slope) == "" or str(intercept) == "":
        if modality == "CT":
            raise VolumeError(
                "RescaleSlope/RescaleIntercept missing on a CT slice (Type 1 in the CT Image "
                f"module; instance {ds.get('InstanceNumber', '?')}): Hounsfield units cannot be "
                "derived"
            )
        return 1.0, 0.0  # MR and others: stored values are the image values
    return float(slope), float(intercept)


def load_dicom(
    headers: Sequence[SliceHeader], tol: LoadTolerances | None = None
) -> LoadedVolume:
    """Load the slices (already selected as one series) into a float32 volume."""
    if not headers:
        raise VolumeError("no DICOM slices to load")
    first = headers[0].ds
    modality = str(first.get("Modality", "") or "").upper()
    if modality == "CT":
        for h in headers:  # refuse before decoding anything
            _rescale(h.ds, modality)
    stack = stack_geometry([h.ds for h in headers], tol)
    array = np.empty((len(headers), stack.rows, stack.columns), dtype=np.float32)
    sources: list[SourceInstance] = []
    header0: Dataset | None = None
    for k, idx in enumerate(stack.order):
        path = headers[idx].path
        try:
            ds = pydicom.dcmread(path)
            pixels = ds.pixel_array
        except (InvalidDicomError, OSError, ValueError, RuntimeError, AttributeError) as exc:
            raise VolumeError(f"cannot decode pixel data of {path.name}: {exc}") from exc
        if pixels.shape != (stack.rows, stack.columns):
            raise VolumeError(f"{path.name}: pixel array shape {pixels.shape} is not one slice")
        slope, intercept = _rescale(ds, modality)
        out = array[k]
        np.multiply(pixels, slope, out=out, casting="unsafe")
        out += intercept
        sources.append(SourceInstance(sop_class_of(ds), sop_instance_of(ds)))
        if header0 is None:
            del ds.PixelData
            header0 = ds
        del pixels, ds
    volume = Volume(
        array=array,
        geometry=stack.geometry,
        modality=modality or "OT",
        study_instance_uid=str(first.get("StudyInstanceUID", "") or "") or None,
        series_instance_uid=str(first.get("SeriesInstanceUID", "") or "") or None,
        sources=sources,
        header=header0,
        description=str(first.get("SeriesDescription", "") or ""),
    )
    log.info(
        "volume_loaded", slices=len(headers), shape=array.shape,
        spacing=stack.geometry.spacing, series_uid=volume.series_instance_uid,
    )
    return LoadedVolume(volume, list(stack.warnings))


def load_dicom_series(
    paths: Path | Sequence[Path], tol: LoadTolerances | None = None
) -> LoadedVolume:
    """Convenience: read every DICOM file under ``paths`` as ONE series and load it."""
    headers, _skipped = read_headers(list_files(paths))
    uids = {str(h.ds.get("SeriesInstanceUID", "") or "") for h in headers}
    if len(uids) > 1:
        raise VolumeError(f"{len(uids)} different series found; select one first")
    return load_dicom(headers, tol)


def is_nifti(path: Path) -> bool:
    name = path.name.lower()
    return path.is_file() and (name.endswith(".nii") or name.endswith(".nii.gz"))


def _check_nifti_complete(path: Path) -> None:
    """Refuse truncated files (SimpleITK silently fills a truncated .nii.gz with garbage)."""
    import gzip
    import struct

    opener: Any = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            head = f.read(352)
            if len(head) < 348:
                raise VolumeError(f"{path.name}: not a NIfTI file (header too short)")
            endian = "<" if struct.unpack("<i", head[:4])[0] == 348 else ">"
            if struct.unpack(endian + "i", head[:4])[0] != 348:
                raise VolumeError(f"{path.name}: not a NIfTI-1 file")
            dims = struct.unpack(endian + "8h", head[40:56])
            bitpix = struct.unpack(endian + "h", head[72:74])[0]
            vox_offset = struct.unpack(endian + "f", head[108:112])[0]
            expected = int(vox_offset) + int(np.prod(dims[1:1 + dims[0]])) * bitpix // 8
            size = len(head)
            while chunk := f.read(1 << 24):
                size += len(chunk)
    except (EOFError, OSError) as exc:
        raise VolumeError(f"cannot read NIfTI {path.name}: {exc}") from exc
    if size < expected:
        raise VolumeError(
            f"cannot read NIfTI {path.name}: truncated ({size} of {expected} bytes)"
        )


def load_nifti(path: Path, modality: str = "CT") -> LoadedVolume:
    """NIfTI for research use. SimpleITK reports NIfTI geometry already in LPS."""
    import SimpleITK as sitk

    _check_nifti_complete(path)

    try:
        image = sitk.ReadImage(str(path), sitk.sitkFloat32)
    except RuntimeError as exc:
        raise VolumeError(f"cannot read NIfTI {path.name}: {exc}") from exc
    if image.GetDimension() != 3:
        raise VolumeError(f"{path.name}: expected a 3D image, got {image.GetDimension()}D")
    array = sitk.GetArrayViewFromImage(image).astype(np.float32, copy=True)
    geometry = Geometry(
        origin=tuple(float(v) for v in image.GetOrigin()),  # type: ignore[arg-type]
        spacing=tuple(float(v) for v in image.GetSpacing()),  # type: ignore[arg-type]
        direction=tuple(float(v) for v in image.GetDirection()),
    )
    volume = Volume(array=array, geometry=geometry, modality=modality, description=path.name)
    return LoadedVolume(volume, ["NIfTI input: research use, no DICOM provenance"])
