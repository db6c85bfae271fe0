"""Load a DICOM slice series or a NIfTI file into a :class:`Volume` (HU, LPS geometry).

DICOM: any file names (:mod:`.dicom_headers`), any transfer syntax pydicom can decode (JPEG 2000
via pylibjpeg-openjpeg). Slices are ordered and their geometry derived by :mod:`.slice_stack`
(positions along the slice normal; duplicate positions, irregular gaps, sheared stacks and
inconsistent slice geometry refused); missing rescale tags on CT are refused here. Every refusal
is a :class:`VolumeError` whose message says exactly what is wrong. The names of those two
modules that callers import from here stay importable here.

Memory: the float32 array is allocated once and each slice is decoded and rescaled straight into
it (one decoded slice alive at a time), so peak memory is about the volume plus one slice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import structlog
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from osteo_node.pipeline.stages.dicom_headers import (
    SliceHeader,
    list_files,
    read_headers,
    sop_class_of,
    sop_instance_of,
)
from osteo_node.pipeline.stages.slice_stack import (
    LoadTolerances,
    StackGeometry,
    VolumeError,
    stack_geometry,
)
from osteo_node.pipeline.types import Geometry, SourceInstance, Volume

__all__ = [
    "CT_IMAGE_STORAGE",
    "LoadTolerances",
    "LoadedVolume",
    "SliceHeader",
    "StackGeometry",
    "VolumeError",
    "is_nifti",
    "list_files",
    "load_dicom",
    "load_dicom_series",
    "load_nifti",
    "read_headers",
    "sop_class_of",
    "sop_instance_of",
    "stack_geometry",
]

log = structlog.get_logger(__name__)

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


@dataclass
class LoadedVolume:
    volume: Volume
    warnings: list[str] = field(default_factory=list)


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


def load_volume(path: Path) -> Volume:
    """The volume of ``path``: a NIfTI file, else a folder (or file) of one DICOM series."""
    return (load_nifti(path) if is_nifti(path) else load_dicom_series(path)).volume


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
