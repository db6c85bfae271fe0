"""Evaluation of the MR analyser against manual vertebral-body masks (pure functions).

Per reference body: Dice with the predicted body that overlaps it most; the body counts as found
at Dice >= ``FOUND_DICE``. Heights: the analyser's heights vs heights measured the SAME way
(``mr.heights.measure_bodies``, i.e. the shared CT ``measure_heights``) on the manual masks.
Levels: the analyser's level name vs the reference level name when the reference has names.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from osteo_node.pipeline.metrics import dice as _dice
from osteo_node.pipeline.mr.heights import measure_bodies
from osteo_node.pipeline.mr.orient import canonical_view
from osteo_node.pipeline.results import AnalysisOutput
from osteo_node.pipeline.stages.measure import MeasureParams
from osteo_node.pipeline.types import Geometry

FOUND_DICE = 0.5
HEIGHT_KEYS = ("anterior", "middle", "posterior")


@dataclass
class BodyScore:
    reference_index: int  # 1..n head to feet in the reference
    reference_level: str | None
    dice: float
    found: bool
    predicted_level: str | None
    height_errors_mm: dict[str, float] = field(default_factory=dict)  # pred - reference
    predicted_grade: int | None = None
    reference_grade: int | None = None  # shared grading on the manual masks' heights


@dataclass
class CaseScore:
    case: str
    bodies: list[BodyScore]
    predicted_bodies: int
    unmatched_predictions_in_range: int  # predicted bodies inside the labelled range, no match
    level_note: str = ""
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def dice(a: NDArray[np.bool_], b: NDArray[np.bool_]) -> float:
    """Dice of two masks, 1.0 when both are empty (both agree there is nothing)."""
    return _dice(a, b, empty=1.0)


def order_reference(ref: NDArray[np.integer], geometry: Geometry) -> list[int]:
    """Reference label values ordered head to feet (by centroid along the canonical SI axis)."""
    view = canonical_view(geometry)
    si_axis = view.perm[1]
    values = [int(v) for v in np.unique(ref) if v != 0]
    pos = {v: float(np.argwhere(ref == v)[:, si_axis].mean()) for v in values}
    return sorted(values, key=lambda v: -pos[v] if view.flip[1] else pos[v])


def score_case(
    case: str,
    output: AnalysisOutput,
    reference: NDArray[np.integer],
    geometry: Geometry,
    reference_levels: Sequence[str] | None,
    *,
    params: MeasureParams | None = None,
) -> CaseScore:
    """Score one analysed case against its reference label map (same grid)."""
    ref_values = order_reference(reference, geometry)
    pred = output.labels.array if output.labels is not None else np.zeros_like(reference)
    pred_values = {
        int(v): name for name, v in (output.labels.levels.items() if output.labels else [])
    }
    pred_heights = {int(v.label_value): v.heights_mm for v in output.result.vertebrae}
    pred_grades = {int(v.label_value): v.genant_grade for v in output.result.vertebrae}
    view = canonical_view(geometry)
    ref_heights = measure_bodies(reference, ref_values, geometry, view, params)
    ref_grades = _reference_grades(ref_heights, reference_levels)
    bodies: list[BodyScore] = []
    matched: set[int] = set()
    for n, (rv, rh) in enumerate(zip(ref_values, ref_heights, strict=True), start=1):
        rmask = reference == rv
        overlap = pred[rmask]
        cand = [int(v) for v in np.unique(overlap) if v != 0]
        best_v, best_d = 0, 0.0
        for v in cand:
            d = dice(rmask, pred == v)
            if d > best_d:
                best_v, best_d = v, d
        found = best_d >= FOUND_DICE
        if found:
            matched.add(best_v)
        errors: dict[str, float] = {}
        ph = pred_heights.get(best_v) if found else None
        if ph is not None and not rh.truncated:
            for key in HEIGHT_KEYS:
                p, r = getattr(ph, key), getattr(rh.measurement.heights, key)
                if p is not None and r is not None:
                    errors[key] = round(float(p - r), 2)
        bodies.append(
            BodyScore(
                reference_index=n,
                reference_level=reference_levels[n - 1] if reference_levels else None,
                dice=round(best_d, 4),
                found=found,
                predicted_level=pred_values.get(best_v) if found else None,
                height_errors_mm=errors,
                predicted_grade=pred_grades.get(best_v) if found else None,
                reference_grade=ref_grades[n - 1],
            )
        )
    si_axis = view.perm[1]
    ref_rows = np.flatnonzero(
        np.any(reference != 0, axis=tuple(a for a in range(3) if a != si_axis))
    )
    unmatched = 0
    for v in pred_values:
        if v in matched:
            continue
        rows = np.argwhere(pred == v)[:, si_axis]
        if rows.size and ref_rows[0] <= float(rows.mean()) <= ref_rows[-1]:
            unmatched += 1
    return CaseScore(case, bodies, len(pred_values), unmatched)


def _reference_grades(heights: Sequence[Any], names: Sequence[str] | None) -> list[int | None]:
    from osteo_node.pipeline.mr.analyser import grade_bodies
    from osteo_node.pipeline.stages.grade import GradingRules

    labels = list(names) if names else [f"V{i}" for i in range(1, len(heights) + 1)]
    hs = [None if h.truncated else h.measurement.heights for h in heights]
    return [g.genant_grade for g in grade_bodies(labels, hs, GradingRules.default())]


def summarise(cases: Sequence[CaseScore]) -> dict[str, Any]:
    """Pooled metrics over cases."""
    bodies = [b for c in cases for b in c.bodies]
    errs = {
        k: [abs(b.height_errors_mm[k]) for b in bodies if k in b.height_errors_mm]
        for k in HEIGHT_KEYS
    }
    all_errs = [e for v in errs.values() for e in v]
    levelled = [b for b in bodies if b.found and b.reference_level is not None]
    named = [
        b
        for b in levelled
        if b.predicted_level is not None and not b.predicted_level.startswith("V")
    ]
    graded = [b for b in bodies if b.predicted_grade is not None and b.reference_grade is not None]
    grades = {
        "graded_pairs": len(graded),
        "identical": sum(b.predicted_grade == b.reference_grade for b in graded),
        "false_positive_grade_ge1": sum(
            (b.predicted_grade or 0) >= 1 and b.reference_grade == 0 for b in graded
        ),
        "false_negative_grade_ge1": sum(
            b.predicted_grade == 0 and (b.reference_grade or 0) >= 1 for b in graded
        ),
    }
    return {
        "genant_vs_manual_masks": grades,
        "cases": len(cases),
        "bodies": len(bodies),
        "mean_body_dice": round(float(np.mean([b.dice for b in bodies])), 4) if bodies else None,
        "median_body_dice": round(float(np.median([b.dice for b in bodies])), 4)
        if bodies
        else None,
        "found_fraction": round(sum(b.found for b in bodies) / len(bodies), 4) if bodies else None,
        "mean_dice_found_bodies": round(float(np.mean([b.dice for b in bodies if b.found])), 4)
        if any(b.found for b in bodies)
        else None,
        "unmatched_predictions_in_labelled_range": sum(
            c.unmatched_predictions_in_range for c in cases
        ),
        "height_median_abs_error_mm": {
            k: round(float(np.median(v)), 2) if v else None for k, v in errs.items()
        },
        "height_median_abs_error_mm_all": round(float(np.median(all_errs)), 2)
        if all_errs
        else None,
        "height_p90_abs_error_mm_all": round(float(np.percentile(all_errs, 90)), 2)
        if all_errs
        else None,
        "height_pairs": len(all_errs),
        "levels_named_fraction": round(len(named) / len(levelled), 4) if levelled else None,
        "levels_correct_fraction_of_named": round(
            sum(b.predicted_level == b.reference_level for b in named) / len(named), 4
        )
        if named
        else None,
    }


def reference_levels_for(case: str, n_bodies: int) -> list[str] | None:
    """Level names of the vertebral_bodies reference masks (head to feet), when known.

    vb2_* masks hold T11..L5 (7 bodies), vb3_* masks L1..L5 (5 bodies); other cases: None.
    """
    names = {
        "vb2_": ("T11", "T12", "L1", "L2", "L3", "L4", "L5"),
        "vb3_": ("L1", "L2", "L3", "L4", "L5"),
    }.get(case[:4])
    return list(names) if names is not None and len(names) == n_bodies else None


def evaluate_nifti_case(analyser: Any, case: str, image: Path, label: Path) -> CaseScore | None:
    """Run ``analyser`` on one NIfTI image and score it against its label NIfTI (same grid).

    Returns None when the analyser refused the case (the caller reports the reason).
    """
    import time

    import SimpleITK as sitk

    t0 = time.perf_counter()
    out = analyser.analyse([image])
    seconds = time.perf_counter() - t0
    if out.volume is None or out.labels is None:
        return None
    ref = sitk.GetArrayFromImage(sitk.ReadImage(str(label))).astype(np.int32)
    n_ref = len([v for v in np.unique(ref) if v])
    score = score_case(case, out, ref, out.volume.geometry, reference_levels_for(case, n_ref))
    score.seconds = round(seconds, 2)
    score.level_note = "; ".join(w for w in out.result.warnings if "level" in w)
    return score


def thick_slab_copy(image: Path, label: Path, thick: int, out_dir: Path) -> tuple[Path, Path]:
    """Write NIfTI copies with ``thick`` sagittal slices averaged into one slab.

    The reference keeps the central slice of each slab. For the 1 mm vertebral_bodies volumes
    this mimics a clinical sagittal series of ``thick`` mm slices.
    """
    import SimpleITK as sitk

    from osteo_node.pipeline.sitk_io import geometry_of, to_sitk

    img, lab = sitk.ReadImage(str(image), sitk.sitkFloat32), sitk.ReadImage(str(label))
    a, b = sitk.GetArrayFromImage(img), sitk.GetArrayFromImage(lab)
    src = geometry_of(img)
    direction = src.matrix
    spacing = np.asarray(src.spacing)
    lr_axis = int(np.argmax(np.abs(direction[0])))  # i, j or k most along LPS x
    arr_axis = 2 - lr_axis
    n = a.shape[arr_axis] // thick
    a = np.moveaxis(a, arr_axis, 0)[: n * thick]
    b = np.moveaxis(b, arr_axis, 0)[: n * thick]
    a_t = a.reshape(n, thick, *a.shape[1:]).mean(axis=1)
    b_t = b[thick // 2 :: thick][:n]
    a_t, b_t = np.moveaxis(a_t, 0, arr_axis), np.moveaxis(b_t, 0, arr_axis)
    new_spacing = spacing.copy()
    new_spacing[lr_axis] *= thick
    o = np.asarray(src.origin) + direction[:, lr_axis] * spacing[lr_axis] * (thick - 1) / 2
    sp = new_spacing
    slab = Geometry((float(o[0]), float(o[1]), float(o[2])),
                    (float(sp[0]), float(sp[1]), float(sp[2])), src.direction)
    paths = []
    for arr, name in ((a_t.astype(np.float32), "image"), (b_t, "label")):
        out = to_sitk(np.ascontiguousarray(arr), slab)
        p = out_dir / f"{image.name.split('_image')[0]}_{name}_thick{thick}.nii.gz"
        sitk.WriteImage(out, str(p))
        paths.append(p)
    return paths[0], paths[1]


# Intensity stress tests (scanner/sequence differences): name -> transform of the uint8 image.
INTENSITY_TRANSFORMS: dict[str, Any] = {
    "scale": lambda x: x * 7.3 + 120.0,  # linear rescale: must not change anything
    "gamma0.5": lambda x: 255.0 * (x / 255.0) ** 0.5,
    "gamma2": lambda x: 255.0 * (x / 255.0) ** 2,
    "invert": lambda x: (255.0 - x) * (x > 5),  # crude T1-like contrast (air stays dark)
}


def intensity_copy(image: Path, transform: str, out_dir: Path) -> Path:
    """Write a NIfTI copy of ``image`` with one of :data:`INTENSITY_TRANSFORMS` applied."""
    import SimpleITK as sitk

    img = sitk.ReadImage(str(image), sitk.sitkFloat32)
    arr = INTENSITY_TRANSFORMS[transform](sitk.GetArrayFromImage(img)).astype(np.float32)
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(img)
    path = out_dir / f"{image.name.split('.nii')[0]}_{transform}.nii.gz"
    sitk.WriteImage(out, str(path))
    return path
