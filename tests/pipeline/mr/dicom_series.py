"""Turn a real MRI NIfTI case into a sagittal MR Image Storage DICOM series (test helper).

The 1 mm training/validation volumes are converted the way a scanner stores a sagittal series:
one single-frame MR instance per sagittal slice, rows head -> feet, columns anterior ->
posterior (ImageOrientationPatient 0\\1\\0\\0\\0\\-1), ImagePositionPatient of each slice's
first pixel in LPS, PixelSpacing, SliceThickness, RepetitionTime/EchoTime of a T2 TSE. Slices
can be made thick (mean of ``slab`` 1 mm slices) and the in-plane grid resampled, so the series
looks like a clinical one (e.g. 512 x 512 pixels, 4 mm slices). The matching reference label map
is returned on the same grid (central slice of each slab, nearest-neighbour in-plane).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from numpy.typing import NDArray
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from scipy import ndimage

from osteo_node.pipeline.types import Geometry

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"


@dataclass
class SagittalCase:
    image: NDArray[np.float32]  # [LR slice, SI row, AP column]
    labels: NDArray[np.int32]  # same grid
    pixel_mm: tuple[float, float]  # (row spacing SI, column spacing AP)
    slice_mm: float
    first_pixel_lps: NDArray[np.float64]  # LPS of pixel (0, 0) of slice 0
    slice_dir_lps: NDArray[np.float64]  # unit LPS step between slices


def sagittal_case(
    image_path: Path,
    label_path: Path,
    *,
    slab: int = 1,
    shape_rc: tuple[int, int] | None = None,
    pixel_mm: float | None = None,
    max_slices: int | None = None,
) -> SagittalCase:
    """Read a (SI, AP, LR)-ordered NIfTI case into a sagittal stack, optionally thick/resampled.

    ``shape_rc`` + ``pixel_mm`` resample each slice to that many rows/columns at that pixel size
    (centred on the source field of view, zero outside, like a wider field of view).
    """
    img = sitk.ReadImage(str(image_path), sitk.sitkFloat32)
    lab = sitk.ReadImage(str(label_path))
    a = sitk.GetArrayFromImage(img)  # [k, j, i] = [LR, AP, SI] for these cases
    b = sitk.GetArrayFromImage(lab).astype(np.int32)
    direction = np.asarray(img.GetDirection()).reshape(3, 3)  # columns i, j, k in LPS
    diag = (abs(direction[2, 0]), abs(direction[1, 1]), abs(direction[0, 2]))
    if min(diag) < 0.9:
        raise ValueError("expected i = SI, j = AP, k = LR (the vertebral_bodies layout)")
    # canonical: rows head -> feet (LPS -z), columns anterior -> posterior (LPS +y), slices +x
    a = np.transpose(a, (0, 2, 1))  # [LR, SI, AP]
    b = np.transpose(b, (0, 2, 1))
    spacing = np.asarray(img.GetSpacing())  # i, j, k
    if direction[2, 0] > 0:  # i runs to superior: flip rows
        a, b = a[:, ::-1], b[:, ::-1]
    if direction[1, 1] < 0:  # j runs anterior: flip columns
        a, b = a[:, :, ::-1], b[:, :, ::-1]
    if direction[0, 2] < 0:  # k runs right: flip slices so they go right -> left (+x)
        a, b = a[::-1], b[::-1]
    # LPS of canonical voxel (0, 0, 0): find it from the source index of that corner
    n_lr, n_si, n_ap = a.shape
    src = np.array([
        0 if direction[2, 0] < 0 else n_si - 1,
        0 if direction[1, 1] > 0 else n_ap - 1,
        0 if direction[0, 2] > 0 else n_lr - 1,
    ], dtype=float)
    origin = np.asarray(img.GetOrigin()) + direction @ (src * spacing)
    sp_si, sp_ap, sp_lr = float(spacing[0]), float(spacing[1]), float(spacing[2])
    if slab > 1:
        n = n_lr // slab
        a = a[: n * slab].reshape(n, slab, n_si, n_ap).mean(axis=1)
        b = b[slab // 2 :: slab][:n]
        origin = origin + np.array([1.0, 0, 0]) * sp_lr * (slab - 1) / 2
        sp_lr *= slab
    if max_slices is not None and a.shape[0] > max_slices:
        start = (a.shape[0] - max_slices) // 2
        a, b = a[start : start + max_slices], b[start : start + max_slices]
        origin = origin + np.array([1.0, 0, 0]) * sp_lr * start
    if shape_rc is not None and pixel_mm is not None:
        rows, cols = shape_rc
        # new pixel centres, centred on the old field of view
        c_si = (a.shape[1] - 1) * sp_si / 2 + (np.arange(rows) - (rows - 1) / 2) * pixel_mm
        c_ap = (a.shape[2] - 1) * sp_ap / 2 + (np.arange(cols) - (cols - 1) / 2) * pixel_mm
        rr, cc = np.meshgrid(c_si / sp_si, c_ap / sp_ap, indexing="ij")
        a = np.stack([ndimage.map_coordinates(s, [rr, cc], order=1, cval=0.0) for s in a])
        b = np.stack([ndimage.map_coordinates(s, [rr, cc], order=0, cval=0) for s in b])
        origin = origin + np.array([0, 0, -1.0]) * c_si[0] + np.array([0, 1.0, 0]) * c_ap[0]
        sp_si = sp_ap = pixel_mm
    return SagittalCase(
        image=np.ascontiguousarray(a, dtype=np.float32),
        labels=np.ascontiguousarray(b, dtype=np.int32),
        pixel_mm=(sp_si, sp_ap),
        slice_mm=sp_lr,
        first_pixel_lps=origin,
        slice_dir_lps=np.array([1.0, 0.0, 0.0]),
    )


@dataclass(frozen=True)
class MrProtocol:
    """The sequence a written series claims in its header (the pixels stay the case's):
    TR/TE/TI in ms (TI set: an inversion-recovery sequence, e.g. STIR) and the description."""

    tr_ms: float = 3500.0
    te_ms: float = 100.0
    ti_ms: float | None = None
    description: str = "T2 TSE SAG"


def _new_file(path: Path, sop_uid: str) -> FileDataset:
    """An empty MR Image Storage file dataset (Explicit VR Little Endian) with its UIDs."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MR_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = MR_IMAGE_STORAGE
    ds.SOPInstanceUID = sop_uid
    return ds


def _set_patient_study(ds: FileDataset, study_uid: str, series_uid: str, frame_uid: str) -> None:
    """The (test) patient, study and series of every slice."""
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = frame_uid
    ds.Modality = "MR"
    ds.PatientName = "Test^Sagittal"
    ds.PatientID = "MRTEST1"
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.StudyDate = "20261122"
    ds.StudyTime = "080000"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.SeriesNumber = 3


def _set_protocol(ds: FileDataset, p: MrProtocol) -> None:
    """The sequence the header claims (spin echo, or inversion recovery when TI is set)."""
    ds.SeriesDescription = p.description
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NORM"]
    ds.ScanningSequence = ["IR"] if p.ti_ms else ["SE"]
    ds.SequenceVariant = ["SK", "SP"]
    ds.ScanOptions = ""
    ds.MRAcquisitionType = "2D"
    ds.RepetitionTime = f"{p.tr_ms:g}"
    ds.EchoTime = f"{p.te_ms:g}"
    if p.ti_ms:
        ds.InversionTime = f"{p.ti_ms:g}"
    ds.EchoTrainLength = 17
    ds.MagneticFieldStrength = "1.5"


def _set_geometry(ds: FileDataset, case: SagittalCase, s: int, iop: tuple[float, ...]) -> None:
    """Slice ``s``'s plane: thickness, orientation, position (LPS) and pixel spacing."""
    ds.SliceThickness = f"{case.slice_mm:g}"
    ds.SpacingBetweenSlices = f"{case.slice_mm:g}"
    ds.ImageOrientationPatient = list(iop)
    pos = case.first_pixel_lps + case.slice_dir_lps * case.slice_mm * s
    ds.ImagePositionPatient = [f"{v:.4f}" for v in pos]
    ds.SliceLocation = f"{pos[0]:.4f}"
    ds.PixelSpacing = [f"{case.pixel_mm[0]:g}", f"{case.pixel_mm[1]:g}"]
    ds.PositionReferenceIndicator = ""


def _set_pixels(ds: FileDataset, case: SagittalCase, s: int, scale: float) -> None:
    """Slice ``s``'s pixels as 12-bit unsigned MONOCHROME2."""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = case.image.shape[1], case.image.shape[2]
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    pixels = np.clip(np.round(case.image[s] * scale), 0, 4095).astype(np.uint16)
    ds.PixelData = pixels.tobytes()


def write_series(
    case: SagittalCase,
    out_dir: Path,
    *,
    protocol: MrProtocol | None = None,
    study_uid: str | None = None,
    iop: tuple[float, ...] = (0, 1, 0, 0, 0, -1),
) -> list[Path]:
    """Write one MR Image Storage file per slice; returns the paths.

    ``protocol``: the sequence written into the header (None: a T2 TSE, see :class:`MrProtocol`).
    ``iop`` other than sagittal only relabels the header (for selection tests); the geometry
    then is not that of the pixels.
    """
    p = protocol or MrProtocol()
    out_dir.mkdir(parents=True, exist_ok=True)
    study_uid = study_uid or generate_uid()
    series_uid = generate_uid()
    frame_uid = generate_uid()
    scale = 4000.0 / max(float(case.image.max()), 1.0)
    paths = []
    for s in range(case.image.shape[0]):
        path = out_dir / f"mr_{s:03d}.dcm"
        ds = _new_file(path, generate_uid())
        _set_patient_study(ds, study_uid, series_uid, frame_uid)
        ds.InstanceNumber = s + 1
        _set_protocol(ds, p)
        _set_geometry(ds, case, s, iop)
        _set_pixels(ds, case, s, scale)
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
        paths.append(path)
    return paths


def reference_for_volume(case: SagittalCase, geometry: Geometry) -> NDArray[np.int32]:
    """The reference labels in a loaded Volume's ``[k, j, i]`` order (slice order may differ)."""
    n = case.labels.shape[0]
    corners = geometry.index_to_lps(np.array([[0.0, 0.0, k] for k in range(n)]))
    steps = (corners - case.first_pixel_lps) @ case.slice_dir_lps / case.slice_mm
    order = np.rint(steps).astype(int)
    if sorted(order.tolist()) != list(range(n)):
        raise ValueError(f"volume slices do not match the written slices: {order.tolist()}")
    return case.labels[order]
