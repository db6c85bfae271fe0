"""Contrast phase of a CT series: native, arterial, portal_venous, delayed or unknown.

Evidence, in order:
1. the header: ContrastBolusAgent / ContrastBolusRoute say whether contrast was given; the delay
   AcquisitionTime - ContrastBolusStartTime classifies the phase (Bae 2010 timing);
2. the image: the median attenuation of the largest vessel-sized blob of enhanced blood just
   anterior to the vertebral bodies (aorta / IVC / heart chambers). No such blob -> native.
Image evidence overrides a header that says nothing, and is reported next to it when they
disagree. Constants (with sources) in ``clinical_data/ct_screening.yaml`` under ``phase``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from osteo_node.pipeline.types import Geometry

NO_CONTRAST_WORDS = ("", "NONE", "NO", "N", "NIL", "NATIVE", "0")


@dataclass(frozen=True)
class PhaseRules:
    unenhanced_blood_max_hu: float
    arterial_min_aorta_hu: float
    arterial_max_delay_s: float
    portal_venous_max_delay_s: float
    vessel_min_diameter_mm: float
    vessel_min_hu: float

    @classmethod
    def default(cls) -> PhaseRules:
        from osteo_node.clinical_data import load

        data = load("ct_screening")["phase"]
        return cls(**{k: float(data[k]["value"]) for k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class PhaseResult:
    phase: str  # native | arterial | portal_venous | delayed | unknown
    contrast_given: bool | None
    source: str  # header | image | header+image | none
    evidence: tuple[str, ...]


def _time_s(value: Any) -> float | None:
    text = str(value or "").strip()
    if not text:
        return None
    for fmt in ("%H%M%S.%f", "%H%M%S", "%H%M", "%H:%M:%S.%f", "%H:%M:%S"):
        try:
            t = datetime.strptime(text, fmt)
        except ValueError:
            continue
        return t.hour * 3600 + t.minute * 60 + t.second + t.microsecond / 1e6
    return None


def phase_from_header(ds: Any, rules: PhaseRules) -> PhaseResult | None:
    """Phase from ContrastBolus* tags; None when the header says nothing about contrast."""
    if ds is None:
        return None
    agent = str(ds.get("ContrastBolusAgent", "") or "").strip().upper()
    route = str(ds.get("ContrastBolusRoute", "") or "").strip().upper()
    if "ContrastBolusAgent" not in ds and not route:
        return None
    if agent in NO_CONTRAST_WORDS and not route:
        return PhaseResult("native", False, "header", (f"ContrastBolusAgent {agent!r}",))
    evidence = [f"ContrastBolusAgent {agent!r}" + (f", route {route!r}" if route else "")]
    start = _time_s(ds.get("ContrastBolusStartTime"))
    acq = _time_s(ds.get("AcquisitionTime") or ds.get("ContentTime"))
    if start is None or acq is None:
        return PhaseResult("unknown", True, "header", (*evidence, "no bolus timing"))
    delay = (acq - start) % 86400
    evidence.append(f"scan {delay:.0f} s after bolus start")
    if delay <= rules.arterial_max_delay_s:
        phase = "arterial"
    elif delay <= rules.portal_venous_max_delay_s:
        phase = "portal_venous"
    else:
        phase = "delayed"
    return PhaseResult(phase, True, "header", tuple(evidence))


def enhanced_vessel_hu(
    image: NDArray[Any],
    geometry: Geometry,
    bone_labels: NDArray[Any],
    body_centroids: Sequence[NDArray[np.float64]],
    rules: PhaseRules,
) -> float | None:
    """Median HU of the largest enhanced vessel-sized blob anterior to the vertebral bodies.

    Looks at the axial slice through each body centroid, in a box 10-90 mm anterior and
    +-60 mm lateral of it, outside the (dilated) vertebra labels. None when no blob of at least
    ``vessel_min_diameter_mm`` with ``vessel_min_hu``..600 HU exists.
    """
    m = geometry.matrix
    if abs(m[2, 2]) < 0.9:  # slices not axial: skip image evidence
        return None
    sx, sy = geometry.spacing[0], geometry.spacing[1]
    radius_px = max(1, round(rules.vessel_min_diameter_mm / 2 / min(sx, sy)))
    yy, xx = np.mgrid[-radius_px:radius_px + 1, -radius_px:radius_px + 1]
    disk = (xx * sx) ** 2 + (yy * sy) ** 2 <= (rules.vessel_min_diameter_mm / 2) ** 2
    best: tuple[int, float] | None = None
    ii = np.arange(image.shape[2], dtype=np.float64) * sx
    jj = np.arange(image.shape[1], dtype=np.float64) * sy
    for c in body_centroids:
        k = round(float(geometry.lps_to_index(c)[2]))
        if not 0 <= k < image.shape[0]:
            continue
        base = geometry.index_to_lps((0.0, 0.0, float(k))) - c
        # LPS x (left) and -y (anterior) of every pixel of slice k, relative to the centroid
        lat = base[0] + ii[None, :] * m[0, 0] + jj[:, None] * m[0, 1]
        ant = -(base[1] + ii[None, :] * m[1, 0] + jj[:, None] * m[1, 1])
        box = (ant > 10) & (ant < 90) & (np.abs(lat) < 60)
        rows, cols = np.flatnonzero(box.any(axis=1)), np.flatnonzero(box.any(axis=0))
        if rows.size == 0:
            continue
        win = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
        sl = image[k][win]
        bone = ndimage.binary_dilation(bone_labels[k][win] > 0, iterations=3)
        cand = box[win] & ~bone & (sl >= rules.vessel_min_hu) & (sl < 600)
        core = ndimage.binary_erosion(cand, structure=disk)
        if not core.any():
            continue
        lab, _ = ndimage.label(cand)
        ids, counts = np.unique(lab[core], return_counts=True)
        blob = lab == ids[int(np.argmax(counts))]
        size = int(blob.sum())
        if best is None or size > best[0]:
            best = (size, float(np.median(sl[blob])))
    return None if best is None else best[1]


def detect_phase(
    header: Any,
    image: NDArray[Any] | None,
    geometry: Geometry | None,
    bone_labels: NDArray[Any] | None,
    body_centroids: Sequence[NDArray[np.float64]],
    *,
    rules: PhaseRules | None = None,
) -> PhaseResult:
    rules = rules or PhaseRules.default()
    from_header = phase_from_header(header, rules)
    from_image: PhaseResult | None = None
    if image is not None and geometry is not None and bone_labels is not None and body_centroids:
        hu = enhanced_vessel_hu(image, geometry, bone_labels, body_centroids, rules)
        if hu is None or hu <= rules.unenhanced_blood_max_hu:
            from_image = PhaseResult(
                "native", False, "image",
                ("no enhanced large vessel anterior to the spine",),
            )
        else:
            phase = "arterial" if hu >= rules.arterial_min_aorta_hu else "portal_venous"
            from_image = PhaseResult(
                phase, True, "image",
                (f"enhanced vessel anterior to the spine, median {hu:.0f} HU",),
            )
    if from_header is None and from_image is None:
        return PhaseResult("unknown", None, "none", ("no header or image evidence",))
    if from_header is None:
        assert from_image is not None
        return from_image
    if from_image is None:
        return from_header
    evidence = (*from_header.evidence, *from_image.evidence)
    if from_header.phase in ("unknown", "delayed") and from_image.contrast_given:
        return PhaseResult(from_image.phase, True, "header+image", evidence)
    if from_header.contrast_given is False and from_image.contrast_given:
        # Contrast visible although the header says none: trust the image, say so.
        return PhaseResult(from_image.phase, True, "header+image",
                           (*evidence, "header and image disagree: image evidence used"))
    return PhaseResult(from_header.phase, from_header.contrast_given, "header+image", evidence)
