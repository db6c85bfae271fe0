"""Write a real CT volume from NIfTI as an AXIAL CT Image Storage series, the way a scanner
stores one, for end-to-end tests that need real anatomy in a DICOM series (e.g. the TPTBox
crop with its low-density L3, which the shared data only has as NIfTI).

- The voxel grid is only permuted/flipped (``SimpleITK.DICOMOrient`` to LPS, no resampling), so
  every voxel keeps its exact value and position: one instance per axial slice.
- Geometry in DICOM patient coordinates (LPS; SimpleITK reads NIfTI geometry as LPS):
  ImageOrientationPatient from the direction cosines of the column and row axes,
  ImagePositionPatient of each slice's first voxel, PixelSpacing (row spacing, column spacing),
  SliceThickness = SpacingBetweenSlices = the slice spacing, SliceLocation = z.
- Pixels: signed 16-bit stored values with RescaleSlope 1 / RescaleIntercept -1024 (HU rounded
  to integers; a value outside the int16 range is refused, never clipped).
- Header: the standard (non-private) elements of a real CT slice used as template (e.g. the
  Philips chest series in ../shared/data/ct/chest_ct_series), minus its UIDs, pixel module and
  references to its own study; fresh Study / Series / SOP / Frame of Reference UIDs; the
  patient name / ID / birth date given by the caller (fake values, so a PHI check is
  meaningful).
- Instance 1 is the most superior slice (a head-first scan from head to feet).

Test support only; no part of the product.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from osteo_node.pipeline.types import Volume

RESCALE_INTERCEPT = -1024
# Elements of the template that describe the template's own images or study, not the scanner.
DROPPED = ("PixelData", "ReferencedImageSequence", "ReferencedPerformedProcedureStepSequence",
           "SourceImageSequence", "SpacingBetweenSlices", "SliceLocation",
           "WindowCenter", "WindowWidth", "LargestImagePixelValue", "SmallestImagePixelValue")


@dataclass(frozen=True)
class Identity:
    """Patient and study identity written into every slice."""

    patient_name: str
    patient_id: str
    birth_date: str
    study_uid: str = field(default_factory=generate_uid)
    series_uid: str = field(default_factory=generate_uid)
    frame_of_reference_uid: str = field(default_factory=generate_uid)
    series_description: str = "Lumbar spine axial 1.5 mm"


def axial_image(nifti: Path) -> sitk.Image:
    """The NIfTI volume on an LPS-ordered grid (pure axis permutation / flip, no resampling):
    array axes [k, j, i] = [inferior->superior, anterior->posterior, right->left]."""
    image = sitk.ReadImage(str(nifti), sitk.sitkFloat64)
    if image.GetDimension() != 3:
        raise ValueError(f"{nifti.name}: expected a 3D image, got {image.GetDimension()}D")
    oriented: sitk.Image = sitk.DICOMOrient(image, "LPS")
    normal = np.asarray(oriented.GetDirection(), dtype=np.float64).reshape(3, 3)[:, 2]
    if abs(normal[2]) < np.cos(np.radians(15.0)):
        raise ValueError(f"{nifti.name}: no axis within 15 degrees of the feet-head axis")
    return oriented


def _stored_pixels(hu: np.ndarray) -> np.ndarray:
    stored = np.rint(hu) - RESCALE_INTERCEPT
    info = np.iinfo(np.int16)
    if stored.min() < info.min or stored.max() > info.max:
        raise ValueError(f"HU range {hu.min():.0f}..{hu.max():.0f} does not fit int16 stored "
                         f"values with intercept {RESCALE_INTERCEPT}")
    return stored.astype(np.int16)


def _ds(value: float) -> str:
    """A DS string (<= 16 characters) accurate to 1e-4 mm."""
    text = f"{value:.4f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _base_header(template: Path, who: Identity, sp: tuple[float, float, float],
                 direction: np.ndarray, shape: tuple[int, int]) -> Dataset:
    ds = pydicom.dcmread(template, stop_before_pixels=True)
    ds.remove_private_tags()
    for keyword in DROPPED:
        if keyword in ds:
            delattr(ds, keyword)
    ds.SOPClassUID = CTImageStorage
    ds.StudyInstanceUID, ds.SeriesInstanceUID = who.study_uid, who.series_uid
    ds.FrameOfReferenceUID = who.frame_of_reference_uid
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = (who.patient_name, who.patient_id,
                                                         who.birth_date)
    ds.SeriesDescription = who.series_description
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SeriesNumber = 2
    ds.ImageOrientationPatient = [_ds(v) for v in (*direction[:, 0], *direction[:, 1])]
    ds.PixelSpacing = [_ds(sp[1]), _ds(sp[0])]  # row spacing (between rows), column spacing
    ds.SliceThickness = _ds(sp[2])
    ds.SpacingBetweenSlices = _ds(sp[2])
    ds.Rows, ds.Columns = shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = RESCALE_INTERCEPT, 1, "HU"
    ds.WindowCenter, ds.WindowWidth = 400, 1800  # bone window
    return ds


def write_axial_series(nifti: Path, template: Path, out: Path, who: Identity) -> list[Path]:
    """Write ``nifti`` (HU) as an axial CT series into ``out``; returns the files, instance 1
    (most superior slice) first."""
    image = axial_image(nifti)
    hu = sitk.GetArrayFromImage(image)  # [k, j, i]
    stored = _stored_pixels(hu)
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    spacing = tuple(float(s) for s in image.GetSpacing())
    base = _base_header(template, who, (spacing[0], spacing[1], spacing[2]), direction,
                        (int(hu.shape[1]), int(hu.shape[2])))
    out.mkdir(parents=True, exist_ok=True)
    n = hu.shape[0]
    files: list[Path] = []
    for number in range(1, n + 1):
        k = n - number  # instance 1 = highest k = most superior
        ds = copy.deepcopy(base)
        ds.SOPInstanceUID = generate_uid()
        ds.InstanceNumber = number
        position = image.TransformIndexToPhysicalPoint((0, 0, k))
        ds.ImagePositionPatient = [_ds(v) for v in position]
        ds.SliceLocation = _ds(position[2])
        ds.PixelData = stored[k].tobytes()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
        path = out / f"CT{number:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return files


@dataclass(frozen=True)
class Correspondence:
    """How two volumes on permuted grids match voxel for voxel."""

    one_to_one: bool  # every voxel of ``a`` lands on a distinct voxel of ``b``, none left over
    max_position_error_mm: float  # distance of ``a``'s voxel centres to ``b``'s nearest ones
    max_value_diff: float  # largest |a - b| over the matched voxels


def voxel_correspondence(a: Volume, b: Volume) -> Correspondence:
    """Match every voxel centre of ``a`` to the nearest voxel centre of ``b`` in LPS mm (for
    grids that are permutations / flips of each other, e.g. an axial DICOM series and the
    sagittal NIfTI it was written from)."""
    shape = a.array.shape  # [k, j, i]
    k, j, i = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    ijk = np.stack([i.ravel(), j.ravel(), k.ravel()], axis=1).astype(np.float64)
    lps = a.geometry.index_to_lps(ijk)
    nearest = np.rint(b.geometry.lps_to_index(lps)).astype(np.int64)
    bounds = np.array(b.array.shape[::-1])
    inside = bool(np.all((nearest >= 0) & (nearest < bounds)))
    if not inside or a.array.size != b.array.size:
        return Correspondence(False, float("inf"), float("inf"))
    error = np.linalg.norm(b.geometry.index_to_lps(nearest.astype(np.float64)) - lps, axis=1)
    flat = np.ravel_multi_index((nearest[:, 2], nearest[:, 1], nearest[:, 0]), b.array.shape)
    one_to_one = np.unique(flat).size == flat.size
    diff = np.abs(a.array.ravel().astype(np.float64) - b.array.ravel()[flat])
    return Correspondence(bool(one_to_one), float(error.max()), float(diff.max()))
