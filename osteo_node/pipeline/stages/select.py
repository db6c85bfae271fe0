"""Rule-based CT series selection: a pure function of DICOM headers and rules loaded from YAML.

The rules live in ``config/series_selection.yaml``. Instances are grouped into series by
SeriesInstanceUID (instances with an empty UID form one group); each series is accepted or
rejected with every reason that applies; among the accepted ones the preferred series is the one
with a soft-tissue kernel, then the thinnest slices, then the most slices.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydicom.dataset import Dataset

from osteo_node.pipeline.stages.volume import LoadTolerances, sop_class_of
from osteo_node.resources import resource_path

NO_UID = "<no SeriesInstanceUID>"


def default_rules_path() -> Path:
    """``config/series_selection.yaml`` (source tree, installed data, $OSTEO_SELECTION_RULES)."""
    return resource_path("config/series_selection.yaml", "OSTEO_SELECTION_RULES")


@dataclass(frozen=True)
class SelectionRules:
    modalities: tuple[str, ...]
    sop_classes: tuple[str, ...]
    required_image_type: tuple[str, ...]
    excluded_image_type: tuple[str, ...]
    excluded_description_words: tuple[str, ...]
    max_axial_tilt_deg: float
    max_gantry_tilt_deg: float
    gantry_tilt_action: str
    min_slices: int
    min_coverage_mm: float
    max_slice_thickness_mm: float
    max_slice_spacing_mm: float
    soft_tissue_kernels: tuple[str, ...]
    sharp_kernels: tuple[str, ...]
    volume: LoadTolerances = field(default_factory=LoadTolerances)

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> SelectionRules:
        def strs(key: str) -> tuple[str, ...]:
            return tuple(str(v) for v in data.get(key, []))

        action = str(data.get("gantry_tilt_action", "refuse"))
        if action != "refuse":
            raise ValueError(f"gantry_tilt_action {action!r} not supported (only 'refuse')")
        return cls(
            modalities=tuple(s.upper() for s in strs("modalities")),
            sop_classes=strs("sop_classes"),
            required_image_type=tuple(s.upper() for s in strs("required_image_type")),
            excluded_image_type=tuple(s.upper() for s in strs("excluded_image_type")),
            excluded_description_words=tuple(
                s.lower() for s in strs("excluded_description_words")
            ),
            max_axial_tilt_deg=float(data["max_axial_tilt_deg"]),
            max_gantry_tilt_deg=float(data["max_gantry_tilt_deg"]),
            gantry_tilt_action=action,
            min_slices=int(data["min_slices"]),
            min_coverage_mm=float(data["min_coverage_mm"]),
            max_slice_thickness_mm=float(data["max_slice_thickness_mm"]),
            max_slice_spacing_mm=float(data["max_slice_spacing_mm"]),
            soft_tissue_kernels=strs("soft_tissue_kernels"),
            sharp_kernels=strs("sharp_kernels"),
            volume=LoadTolerances.from_mapping(data.get("volume")),
        )

    @classmethod
    def load(cls, path: Path | None = None) -> SelectionRules:
        path = path or default_rules_path()
        if not path.is_file():
            raise FileNotFoundError(f"series selection rules not found: {path}")
        return cls.from_mapping(yaml.safe_load(path.read_text(encoding="utf-8")))


@dataclass(frozen=True)
class SeriesCandidate:
    series_instance_uid: str
    description: str
    indices: tuple[int, ...]  # positions in the input header list
    accepted: bool
    reasons: tuple[str, ...]  # why rejected (empty when accepted)
    kernel: str
    kernel_class: str  # "soft", "sharp" or "unknown"
    slice_thickness_mm: float | None
    coverage_mm: float
    # instances of the series left out of its stack (a localizer, another orientation or size):
    # one line per kind, with the count
    excluded: tuple[str, ...] = ()

    @property
    def n_slices(self) -> int:
        return len(self.indices)


@dataclass(frozen=True)
class Selection:
    chosen: SeriesCandidate | None
    candidates: tuple[SeriesCandidate, ...]

    @property
    def reason(self) -> str:
        """Why nothing was chosen (every series with its reasons)."""
        if not self.candidates:
            return "no DICOM instances"
        parts = [
            f"series {c.series_instance_uid} ({c.n_slices} instance(s)): " + "; ".join(c.reasons)
            for c in self.candidates
            if not c.accepted
        ]
        return "no suitable CT series: " + " | ".join(parts)


def _get_float(ds: Dataset, keyword: str) -> float | None:
    value = ds.get(keyword)
    if value is None or str(value).strip() == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _kernel_class(kernel: str, rules: SelectionRules) -> str:
    if any(re.search(p, kernel, re.IGNORECASE) for p in rules.soft_tissue_kernels):
        return "soft"
    if any(re.search(p, kernel, re.IGNORECASE) for p in rules.sharp_kernels):
        return "sharp"
    return "unknown"


def _orientation_reason(headers: Sequence[Dataset], rules: SelectionRules) -> list[str]:
    iop = headers[0].get("ImageOrientationPatient")
    if iop is None or len(iop) != 6:
        return ["ImageOrientationPatient missing: orientation unknown"]
    v = np.asarray([float(x) for x in iop])
    normal = np.cross(v[:3], v[3:])
    norm = float(np.linalg.norm(normal))
    if norm < 1e-6:
        return ["ImageOrientationPatient degenerate"]
    tilt = math.degrees(math.acos(min(1.0, abs(float(normal[2])) / norm)))
    if tilt > rules.max_axial_tilt_deg:
        return [f"not axial: slice normal {tilt:.1f} deg from the feet-head axis "
                f"(limit {rules.max_axial_tilt_deg:g})"]
    return []


def _coverage(headers: Sequence[Dataset]) -> tuple[float, float | None]:
    """Extent along the normal (mm) and the median gap between distinct positions."""
    iop = headers[0].get("ImageOrientationPatient")
    if iop is None or len(iop) != 6:
        return 0.0, None
    v = np.asarray([float(x) for x in iop])
    normal = np.cross(v[:3], v[3:])
    d = []
    for ds in headers:
        ipp = ds.get("ImagePositionPatient")
        if ipp is not None and len(ipp) == 3:
            d.append(float(np.asarray([float(x) for x in ipp]) @ normal))
    if len(d) < 2:
        return 0.0, None
    s = np.unique(np.round(np.asarray(d), 3))
    gap = float(np.median(np.diff(s))) if len(s) > 1 else None
    return float(s[-1] - s[0]), gap


def evaluate_series(
    uid: str, indices: Sequence[int], headers: Sequence[Dataset], rules: SelectionRules
) -> SeriesCandidate:
    first = headers[0]
    reasons: list[str] = []
    modality = str(first.get("Modality", "") or "").upper()
    if modality not in rules.modalities:
        reasons.append(f"modality {modality or 'missing'} not in {list(rules.modalities)}")
    sop = sop_class_of(first)
    if sop not in rules.sop_classes:
        reasons.append(f"SOP class {sop or 'missing'} is not a CT image slice stack")
    image_type = [str(x).upper() for x in (first.get("ImageType") or [])]
    if image_type[: len(rules.required_image_type)] != list(rules.required_image_type):
        reasons.append(
            f"ImageType {'/'.join(image_type) or 'missing'} is not "
            f"{'/'.join(rules.required_image_type)}"
        )
    bad_types = [t for t in image_type if t in rules.excluded_image_type]
    if bad_types:
        reasons.append(f"ImageType says {'/'.join(bad_types)} (localizer/derived)")
    text = " ".join(
        str(first.get(k, "") or "") for k in ("SeriesDescription", "ProtocolName")
    ).lower()
    words = [w for w in rules.excluded_description_words if w in text]
    if words:
        reasons.append(f"description mentions {', '.join(repr(w) for w in words)}")
    reasons += _orientation_reason(headers, rules)
    tilt = _get_float(first, "GantryDetectorTilt")
    if tilt is not None and abs(tilt) > rules.max_gantry_tilt_deg:
        reasons.append(
            f"gantry tilt {tilt:g} deg exceeds {rules.max_gantry_tilt_deg:g} deg "
            "(tilted stacks are refused, not resampled)"
        )
    n = len(indices)
    if n < rules.min_slices:
        reasons.append(f"only {n} slice(s) (minimum {rules.min_slices})")
    coverage, gap = _coverage(headers)
    if n >= 2 and coverage < rules.min_coverage_mm:
        reasons.append(f"covers only {coverage:.0f} mm (minimum {rules.min_coverage_mm:g} mm)")
    thickness = _get_float(first, "SliceThickness")
    if thickness is not None and thickness > rules.max_slice_thickness_mm:
        reasons.append(
            f"slice thickness {thickness:g} mm > {rules.max_slice_thickness_mm:g} mm"
        )
    if gap is not None and gap > rules.max_slice_spacing_mm:
        reasons.append(f"slice spacing {gap:g} mm > {rules.max_slice_spacing_mm:g} mm")
    kernels = first.get("ConvolutionKernel")
    kernel = ""
    if kernels is not None:
        kernel = str(kernels[0] if isinstance(kernels, Sequence | list) and not
                     isinstance(kernels, str) else kernels)
    return SeriesCandidate(
        series_instance_uid=uid,
        description=str(first.get("SeriesDescription", "") or ""),
        indices=tuple(indices),
        accepted=not reasons,
        reasons=tuple(reasons),
        kernel=kernel,
        kernel_class=_kernel_class(kernel, rules) if kernel else "unknown",
        slice_thickness_mm=thickness,
        coverage_mm=coverage,
    )


def _preference(c: SeriesCandidate) -> tuple[int, float, int]:
    kernel_rank = {"soft": 0, "unknown": 1, "sharp": 2}[c.kernel_class]
    return (kernel_rank, c.slice_thickness_mm or 99.0, -c.n_slices)


def _layout(ds: Dataset) -> tuple[Any, ...]:
    """What every slice of one stack shares: orientation, matrix size, pixel spacing."""
    def rounded(keyword: str, n: int) -> tuple[float, ...] | None:
        v = ds.get(keyword)
        try:
            return tuple(round(float(x), 3) for x in v) if v is not None and len(v) == n \
                else None
        except (TypeError, ValueError):
            return None

    return (rounded("ImageOrientationPatient", 6), ds.get("Rows"), ds.get("Columns"),
            rounded("PixelSpacing", 2))


def stack_members(indices: Sequence[int], headers: Sequence[Dataset]
                  ) -> tuple[list[int], tuple[str, ...]]:
    """The series' instances that form its image stack, and what was left out: a localizer
    (ImageType LOCALIZER) or an image of another orientation / matrix / pixel spacing inside
    an otherwise good axial series must not block it."""
    excluded: dict[str, int] = {}
    keep: list[int] = []
    candidates = []
    for i in indices:
        types = [str(t).upper() for t in (headers[i].get("ImageType") or [])]
        if any(t in ("LOCALIZER", "SCOUT") for t in types):
            excluded["localizer"] = excluded.get("localizer", 0) + 1
        else:
            candidates.append(i)
    if candidates:
        layouts = [_layout(headers[i]) for i in candidates]
        common = max(set(layouts), key=layouts.count)
        for i, lay in zip(candidates, layouts, strict=True):
            if lay == common:
                keep.append(i)
            else:
                excluded["another orientation, matrix or pixel spacing"] = \
                    excluded.get("another orientation, matrix or pixel spacing", 0) + 1
    if not keep:  # nothing forms a stack: judge the series as it is
        return list(indices), ()
    return keep, tuple(f"{n} image(s) left out of the stack: {why}"
                       for why, n in excluded.items())


def select_series(headers: Sequence[Dataset], rules: SelectionRules) -> Selection:
    """Group instances into series, judge each (its image stack), pick the preferred one."""
    groups: dict[str, list[int]] = {}
    for n, ds in enumerate(headers):
        uid = str(ds.get("SeriesInstanceUID", "") or "") or NO_UID
        groups.setdefault(uid, []).append(n)
    candidates_list = []
    for uid, idx in groups.items():
        keep, excluded = stack_members(idx, headers)
        c = evaluate_series(uid, keep, [headers[i] for i in keep], rules)
        candidates_list.append(replace(c, excluded=excluded))
    candidates = tuple(candidates_list)
    accepted = sorted((c for c in candidates if c.accepted), key=_preference)
    return Selection(accepted[0] if accepted else None, candidates)
