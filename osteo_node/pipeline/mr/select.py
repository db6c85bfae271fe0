"""Sagittal spine MR series selection: a pure function of DICOM headers.

Instances are grouped by SeriesInstanceUID; each series is accepted or refused with every reason
that applies. Accepted: MR Image Storage, not a localizer/projection/diffusion image, sagittal
(slice normal within ``max_oblique_deg`` of the patient left-right axis), a recognised T1, T2
or STIR/TIRM weighting, enough slices and cranio-caudal field of view, slices not too thick.
Among accepted series the preference is T2, then T1, then STIR, then the finest pixels, then the
most slices.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset

from osteo_node.pipeline.mr.sequence import SequenceInfo, classify_sequence
from osteo_node.pipeline.stages.volume import sop_class_of

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4.1"
NO_UID = "<no SeriesInstanceUID>"
AXIS_NAMES = ("sagittal", "coronal", "axial")  # slice normal along L-R, A-P, S-I


@dataclass(frozen=True)
class MRSelectionRules:
    accepted_weightings: tuple[str, ...] = ("T2", "T1", "STIR")  # also the preference order
    excluded_image_type: tuple[str, ...] = (
        "LOCALIZER",
        "SCOUT",
        "MIP",
        "PROJECTION IMAGE",
        "SUBTRACTION",
    )
    max_oblique_deg: float = 30.0
    min_slices: int = 5
    max_slice_thickness_mm: float = 6.0
    max_pixel_spacing_mm: float = 2.0
    min_si_fov_mm: float = 100.0


@dataclass(frozen=True)
class MRSeriesCandidate:
    series_instance_uid: str
    description: str
    indices: tuple[int, ...]
    accepted: bool
    reasons: tuple[str, ...]
    sequence: SequenceInfo
    orientation: str
    pixel_spacing_mm: float | None

    @property
    def n_slices(self) -> int:
        return len(self.indices)


@dataclass(frozen=True)
class MRSelection:
    chosen: MRSeriesCandidate | None
    candidates: tuple[MRSeriesCandidate, ...]

    @property
    def reason(self) -> str:
        if not self.candidates:
            return "no DICOM instances"
        parts = [
            f"series {c.series_instance_uid} ({c.n_slices} instance(s), "
            f"{c.description or 'no description'}): " + "; ".join(c.reasons)
            for c in self.candidates
            if not c.accepted
        ]
        return "no suitable sagittal spine MR series: " + " | ".join(parts)


def _vector(ds: Dataset, keyword: str, n: int) -> np.ndarray | None:
    value = ds.get(keyword)
    if value is None or len(value) != n:
        return None
    try:
        return np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None


def orientation_of(ds: Dataset) -> tuple[str, float, np.ndarray | None]:
    """(plane name, angle in deg between the slice normal and that plane's axis, IOP)."""
    iop = _vector(ds, "ImageOrientationPatient", 6)
    if iop is None:
        return "unknown", 90.0, None
    normal = np.cross(iop[:3], iop[3:])
    norm = float(np.linalg.norm(normal))
    if norm < 1e-6:
        return "unknown", 90.0, None
    normal = np.abs(normal / norm)
    axis = int(np.argmax(normal))
    return AXIS_NAMES[axis], math.degrees(math.acos(min(1.0, float(normal[axis])))), iop


def _orientation_reasons(
    headers: Sequence[Dataset], rules: MRSelectionRules
) -> tuple[str, list[str]]:
    plane, _, iop = orientation_of(headers[0])
    if iop is None:
        return plane, ["ImageOrientationPatient missing or degenerate: orientation unknown"]
    reasons = []
    for ds in headers[1:]:
        other = _vector(ds, "ImageOrientationPatient", 6)
        if other is None or not np.allclose(other, iop, atol=1e-3):
            reasons.append("slices with different orientations in one series (mixed stacks)")
            break
    normal = np.cross(iop[:3], iop[3:])
    lr_angle = math.degrees(
        math.acos(min(1.0, abs(float(normal[0])) / float(np.linalg.norm(normal))))
    )
    if lr_angle > rules.max_oblique_deg:
        reasons.append(
            f"not sagittal: {plane} slices (slice normal {lr_angle:.0f} deg from the patient "
            f"left-right axis, limit {rules.max_oblique_deg:g})"
        )
    return plane, reasons


def _si_fov_mm(ds: Dataset) -> float | None:
    """In-plane field of view along the in-plane axis closest to the feet-head axis."""
    iop = _vector(ds, "ImageOrientationPatient", 6)
    ps = _vector(ds, "PixelSpacing", 2)
    rows, cols = ds.get("Rows"), ds.get("Columns")
    if iop is None or ps is None or rows is None or cols is None:
        return None
    # row direction (iop[:3]) runs along the columns index; column direction along rows
    along_cols = abs(float(iop[2])) * int(cols) * float(ps[1])
    along_rows = abs(float(iop[5])) * int(rows) * float(ps[0])
    return max(along_cols, along_rows)


def evaluate_mr_series(
    uid: str, indices: Sequence[int], headers: Sequence[Dataset], rules: MRSelectionRules
) -> MRSeriesCandidate:
    first = headers[0]
    reasons: list[str] = []
    modality = str(first.get("Modality", "") or "").upper()
    if modality != "MR":
        reasons.append(f"modality {modality or 'missing'} is not MR")
    sop = sop_class_of(first)
    if sop == ENHANCED_MR_STORAGE:
        reasons.append("multi-frame Enhanced MR objects are not supported (single-frame MR only)")
    elif sop != MR_IMAGE_STORAGE:
        reasons.append(f"SOP class {sop or 'missing'} is not MR Image Storage")
    image_type = [str(x).upper() for x in (first.get("ImageType") or [])]
    bad = [t for t in image_type if t in rules.excluded_image_type]
    if bad:
        reasons.append(f"ImageType says {'/'.join(bad)} (localizer/projection/derived)")
    plane, orient_reasons = _orientation_reasons(headers, rules)
    reasons += orient_reasons
    seq = classify_sequence(first)
    if seq.weighting not in rules.accepted_weightings:
        reasons.append(
            f"sequence {seq.weighting} ({seq.evidence}) is not one of "
            f"{'/'.join(rules.accepted_weightings)}"
        )
    n = len(indices)
    if n < rules.min_slices:
        reasons.append(f"only {n} slice(s) (minimum {rules.min_slices})")
    thickness = first.get("SliceThickness")
    if thickness not in (None, "") and float(thickness) > rules.max_slice_thickness_mm:
        reasons.append(
            f"slice thickness {float(thickness):g} mm > {rules.max_slice_thickness_mm:g} mm"
        )
    ps = _vector(first, "PixelSpacing", 2)
    pixel = float(ps.max()) if ps is not None else None
    if pixel is None:
        reasons.append("PixelSpacing missing")
    elif pixel > rules.max_pixel_spacing_mm:
        reasons.append(f"pixel spacing {pixel:g} mm > {rules.max_pixel_spacing_mm:g} mm")
    fov = _si_fov_mm(first)
    if fov is not None and fov < rules.min_si_fov_mm:
        reasons.append(f"cranio-caudal field of view {fov:.0f} mm < {rules.min_si_fov_mm:g} mm")
    return MRSeriesCandidate(
        series_instance_uid=uid,
        description=str(first.get("SeriesDescription", "") or ""),
        indices=tuple(indices),
        accepted=not reasons,
        reasons=tuple(reasons),
        sequence=seq,
        orientation=plane,
        pixel_spacing_mm=pixel,
    )


def select_mr_series(
    headers: Sequence[Dataset], rules: MRSelectionRules | None = None
) -> MRSelection:
    """Group instances into series, judge each, pick the preferred accepted one."""
    rules = rules or MRSelectionRules()
    groups: dict[str, list[int]] = {}
    for n, ds in enumerate(headers):
        uid = str(ds.get("SeriesInstanceUID", "") or "") or NO_UID
        groups.setdefault(uid, []).append(n)
    candidates = tuple(
        evaluate_mr_series(uid, idx, [headers[i] for i in idx], rules)
        for uid, idx in groups.items()
    )
    order = {w: i for i, w in enumerate(rules.accepted_weightings)}
    accepted = sorted(
        (c for c in candidates if c.accepted),
        key=lambda c: (order[c.sequence.weighting], c.pixel_spacing_mm or 99.0, -c.n_slices),
    )
    return MRSelection(accepted[0] if accepted else None, candidates)
