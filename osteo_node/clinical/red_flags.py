"""Red flags for a pathological (non-osteoporotic) vertebral fracture.

Three sources, all with thresholds in ``clinical_data/red_flags.yaml``:

- :func:`body_texture` looks at the HU inside the trabecular core of one vertebral body (a CT
  volume plus the body mask; the core is the density measurement's central ROI, so a mask a
  voxel or two too wide does not change it): focal lytic or sclerotic clusters, each a
  minority of the core and judged against the median of the rest of the core (a uniformly
  low, osteoporotic body has none), and heterogeneous attenuation.
- :func:`imaging_flags` reads an ``osteo-node analyze`` result (dict from ``to_json``): fractures
  above T7, and per-vertebra signs an analyser reports (``texture`` from :func:`body_texture`,
  ``posterior_wall_convex``, ``pedicle_involved``). It is the one place the imaging red flags
  are decided: the SR, the FLS worklist row and ``osteo-node assess`` all read it.
- :func:`clinical_flags` reads a :class:`ClinicalRecord`: cancer / myeloma history, myeloma
  labs, high ALP, unexplained anaemia.

Focal lytic / sclerotic foci are red flags in any body. Heterogeneous attenuation is a sign of a
pathological FRACTURE (issue 5: "heterogeneous HU" inside a fractured body) and counts only for a
fractured body (Genant grade >= ``level.min_genant_grade`` or listed in ``vcf_levels``): normal
mid-thoracic bodies of thin-slice chest CT reach the spread cut-off on their own (T5/T6 of the
real chest series: 61-64 HU). ``BodyTexture.heterogeneous`` keeps the measured sign (spread above
the cut-off) whatever the grade; it is not a red flag by itself.

Posterior wall convexity and pedicle involvement are not measured here (they need body-aligned
geometry and posterior-element segmentation at better than 3 mm); they are taken from the
imaging analysis when it reports them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, replace
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from osteo_node.clinical.record import ClinicalRecord, LabValue
from osteo_node.clinical_data import load
from osteo_node.pipeline.results import LEVELS, level_index
from osteo_node.pipeline.stages.measure import (
    BodyFrame,
    MeasureParams,
    body_frame,
    mask_points_mm,
    roi_values,
    touches_border,
    trabecular_roi,
)
from osteo_node.pipeline.types import Geometry

Source = Literal["imaging", "clinical"]


@dataclass(frozen=True)
class RedFlag:
    code: str
    reason: str
    source: Source
    level: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "reason": self.reason, "source": self.source,
                "level": self.level}


@dataclass(frozen=True)
class BodyTexture:
    """HU texture of one vertebral body, analysed in its trabecular core.

    The core is the density measurement's ROI (:func:`trabecular_roi`: central, away from the
    cortex and endplates, so a body mask a voxel or two too wide leaves it unchanged). Clusters
    are connected voxels of the 3x3x3-median-filtered core HU; the reference is the median HU
    of the core outside the largest lytic and sclerotic candidate clusters, so a lesion does not
    move its own reference and a uniformly low (osteoporotic) core has no candidate at all.
    """

    reference_hu: float  # median HU of the core outside the candidate clusters
    spread_hu: float  # 1.4826 * MAD of the filtered core HU outside the candidate clusters
    lytic_cluster_mm3: float  # largest cluster below reference - lytic_delta_hu
    sclerotic_cluster_mm3: float  # largest cluster above reference + sclerotic_delta_hu
    voxels: int  # voxels in the core
    focal_lytic: bool
    focal_sclerotic: bool
    heterogeneous: bool
    core_mm3: float | None = None  # core volume (absent from results written before 2026-11-22)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _cfg() -> dict[str, Any]:
    return load("red_flags")


def action() -> str:
    return str(_cfg()["action"])


def _masked_median3(hu: NDArray[np.float64], mask: NDArray[np.bool_]) -> NDArray[np.float64]:
    """3x3x3 median of the voxels inside ``mask`` (outside voxels do not contribute; NaN there).

    ``hu`` and ``mask`` are a small crop around the mask.
    """
    padded = np.pad(np.where(mask, hu, np.nan), 1, constant_values=np.nan)
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3, 3))
    out = np.full(hu.shape, np.nan)
    out[mask] = np.nanmedian(windows[mask].reshape(-1, 27), axis=-1)
    return out


def _largest_cluster(mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    labels, n = ndimage.label(mask)
    if n == 0:
        return np.zeros_like(mask)
    return np.asarray(labels == 1 + int(np.argmax(np.bincount(labels.ravel())[1:])))


@dataclass(frozen=True)
class _Clusters:
    reference: float
    lytic: NDArray[np.bool_]  # largest cluster below reference - lytic_delta_hu
    sclerotic: NDArray[np.bool_]  # largest cluster above reference + sclerotic_delta_hu
    rest: NDArray[np.bool_]  # the core less the focal candidates among them


def _clusters_at(
    ref: float, filtered: NDArray[np.float64], core: NDArray[np.bool_],
    cfg: Mapping[str, Any], focal_voxels: tuple[float, float],
) -> _Clusters:
    with np.errstate(invalid="ignore"):
        lytic = _largest_cluster(core & (filtered < ref - float(cfg["lytic_delta_hu"])))
        sclerotic = _largest_cluster(core & (filtered > ref + float(cfg["sclerotic_delta_hu"])))
    rest = core.copy()
    lo, hi = focal_voxels
    for cluster in (lytic, sclerotic):
        if lo <= cluster.sum() <= hi:
            rest &= ~cluster
    return _Clusters(ref, lytic, sclerotic, rest)


def _clusters(
    hu: NDArray[np.float64], filtered: NDArray[np.float64], core: NDArray[np.bool_],
    cfg: Mapping[str, Any], focal_voxels: tuple[float, float],
) -> _Clusters:
    """Largest lytic / sclerotic clusters against the median HU of the REST of the core.

    Starts from the median of the whole core. A focal candidate (a cluster whose size is
    within ``focal_voxels``: at least the smallest focal size, at most the focal fraction of
    the core) is left out of the next reference, until the reference stops changing (at most
    ``reference_iterations`` times). A cluster larger than the focal fraction is the body's
    own attenuation and is never left out, so the reference cannot run away from the core,
    and a uniformly low (osteoporotic) core has no cluster below its own median - delta.
    """
    found = _clusters_at(float(np.median(hu[core])), filtered, core, cfg, focal_voxels)
    for _ in range(int(cfg["reference_iterations"])):
        ref = float(np.median(hu[found.rest]))
        if ref == found.reference:
            break
        found = _clusters_at(ref, filtered, core, cfg, focal_voxels)
    return found


def _inscribed_depth_mm(mask: NDArray[np.bool_], geometry: Geometry) -> float:
    """Largest distance (mm) from a voxel centre of ``mask`` to the nearest voxel centre
    outside it: about half the body's smallest thickness (plus half a voxel)."""
    idx = np.argwhere(mask)
    lo, hi = idx.min(axis=0), idx.max(axis=0) + 1
    box = np.pad(mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]], 1)
    sp = geometry.spacing
    return float(ndimage.distance_transform_edt(box, sampling=(sp[2], sp[1], sp[0])).max())


def body_texture(
    hu: NDArray[Any],
    body_mask: NDArray[np.bool_],
    geometry: Geometry,
    frame: BodyFrame | None = None,
    params: MeasureParams | None = None,
) -> BodyTexture | None:
    """Texture of one vertebral body's trabecular core; ``None`` when it cannot be judged: the
    body touches the edge of the array (cut by the scan), is thinner than twice
    ``min_body_depth_mm`` (a fragment or a flattened body) or its core is too small.

    ``hu`` and ``body_mask`` are [k, j, i] arrays on ``geometry``'s grid; ``frame`` is the body
    frame of the height measurement (computed from the mask when not given); ``params`` the
    measurement parameters (default: ct_screening.yaml ``measurement``), so the core is the
    region the density measurement uses.
    """
    cfg = _cfg()["texture"]
    mask = np.asarray(body_mask, dtype=bool)
    if not mask.any() or touches_border(mask):
        return None  # a body cut by the edge of the scan has no reliable central core
    if _inscribed_depth_mm(mask, geometry) < float(cfg["min_body_depth_mm"]):
        return None  # a fragment or a flattened body: its core lies next to the endplates
    if frame is None:
        frame = body_frame(mask_points_mm(mask, geometry))
    core_params = replace(params or MeasureParams.default(),
                          roi_depth_fraction=float(cfg["core_depth_fraction"]))
    core, offset, _ = trabecular_roi(mask, geometry, frame, core_params,
                                     exclude_vein=bool(cfg["exclude_vein"]))
    n = int(core.sum())
    if n < int(cfg["min_core_voxels"]):
        return None
    voxel_mm3 = float(np.prod(np.asarray(geometry.spacing, dtype=np.float64)))
    values = np.full(core.shape, np.nan)
    values[core] = roi_values(hu, core, offset)
    filtered = _masked_median3(values, core)
    min_mm3 = float(cfg["min_cluster_mm3"])
    max_mm3 = float(cfg["max_cluster_fraction"]) * n * voxel_mm3
    found = _clusters(values, filtered, core, cfg, (min_mm3 / voxel_mm3, max_mm3 / voxel_mm3))
    lytic_mm3 = float(found.lytic.sum()) * voxel_mm3
    sclerotic_mm3 = float(found.sclerotic.sum()) * voxel_mm3
    smooth = filtered[found.rest]
    spread = float(1.4826 * np.median(np.abs(smooth - np.median(smooth))))
    return BodyTexture(
        reference_hu=round(found.reference, 1), spread_hu=round(spread, 1),
        lytic_cluster_mm3=round(lytic_mm3, 1), sclerotic_cluster_mm3=round(sclerotic_mm3, 1),
        voxels=n, focal_lytic=min_mm3 <= lytic_mm3 <= max_mm3,
        focal_sclerotic=min_mm3 <= sclerotic_mm3 <= max_mm3,
        heterogeneous=spread > float(cfg["heterogeneous_spread_hu"]),
        core_mm3=round(n * voxel_mm3, 1),
    )


def texture_flags(level: str | None, tex: BodyTexture, *, fractured: bool) -> list[RedFlag]:
    """Red flags from one body's texture. Focal lytic / sclerotic foci count in any body;
    heterogeneous attenuation only in a ``fractured`` body (when red_flags.yaml
    ``texture.heterogeneous_needs_fracture`` is true, as shipped)."""
    where = f" in {level}" if level else ""
    flags: list[RedFlag] = []
    if tex.focal_lytic:
        flags.append(RedFlag(
            "focal_lytic_area",
            f"focal lytic area{where}: {tex.lytic_cluster_mm3:.0f} mm3 more than "
            f"{_cfg()['texture']['lytic_delta_hu']} HU below the rest of the trabecular core "
            f"(median {tex.reference_hu:.0f} HU)", "imaging", level))
    if tex.focal_sclerotic:
        flags.append(RedFlag(
            "focal_sclerotic_area",
            f"focal sclerotic area{where}: {tex.sclerotic_cluster_mm3:.0f} mm3 more than "
            f"{_cfg()['texture']['sclerotic_delta_hu']} HU above the rest of the trabecular "
            f"core (median {tex.reference_hu:.0f} HU)", "imaging", level))
    needs_fracture = bool(_cfg()["texture"]["heterogeneous_needs_fracture"])
    if tex.heterogeneous and (fractured or not needs_fracture):
        body = "a fractured body's" if fractured else "the"
        flags.append(RedFlag(
            "heterogeneous_hu",
            f"heterogeneous attenuation{where}: robust HU spread {tex.spread_hu:.0f} HU in "
            f"{body} trabecular core", "imaging", level))
    return flags


def _texture_from_json(d: Mapping[str, Any]) -> BodyTexture | None:
    try:
        fields = BodyTexture.__dataclass_fields__.values()
        return BodyTexture(**{f.name: d[f.name] for f in fields
                              if f.name in d or f.default is MISSING})
    except (KeyError, TypeError):
        return None


def imaging_flags(analysis: Mapping[str, Any]) -> list[RedFlag]:
    """Red flags from an ``analyze`` result dict (schema of AnalysisResult.to_json).

    A body is fractured when the findings list it in ``vcf_levels`` or its Genant grade is at
    least red_flags.yaml ``level.min_genant_grade``; that set decides both the "fracture above
    T7" flag and whether heterogeneous attenuation counts (:func:`texture_flags`)."""
    cfg = _cfg()["level"]
    cranial_limit = level_index(str(cfg["fracture_cranial_to"]))
    min_grade = int(cfg["min_genant_grade"])
    findings = analysis.get("findings") or {}
    vertebrae = [v for v in analysis.get("vertebrae") or [] if isinstance(v, Mapping)]
    fractured = {str(lv) for lv in findings.get("vcf_levels") or []}
    for v in vertebrae:
        grade = v.get("genant_grade")
        if isinstance(grade, int) and not isinstance(grade, bool) and grade >= min_grade:
            fractured.add(str(v.get("level")))
    flags: list[RedFlag] = []
    for v in vertebrae:
        level = str(v.get("level"))
        tex = _texture_from_json(v.get("texture") or {})
        if tex is not None:
            flags.extend(texture_flags(level, tex, fractured=level in fractured))
        if v.get("posterior_wall_convex"):
            flags.append(RedFlag("posterior_wall_convexity",
                                 f"convex posterior wall of {level}", "imaging", level))
        if v.get("pedicle_involved"):
            flags.append(RedFlag("pedicle_involvement",
                                 f"pedicle involvement at {level}", "imaging", level))
    for level in sorted(fractured, key=lambda lv: level_index(lv) if lv in LEVELS else 99):
        if level in LEVELS and level_index(level) < cranial_limit:
            flags.append(RedFlag(
                "fracture_above_t7",
                f"vertebral fracture at {level}, above T7 (uncommon for osteoporosis)",
                "imaging", level))
    return flags


def _lab_high(value: float | None, ref_high: float | None, fallback: float) -> bool:
    if value is None:
        return False
    return value > (ref_high if ref_high is not None else fallback)


def _history_flags(cond: Mapping[str, list[str]]) -> list[RedFlag]:
    """Myeloma, bone metastasis, and other cancer in the recorded conditions."""
    flags: list[RedFlag] = []
    if "myeloma" in cond:
        flags.append(RedFlag("myeloma_history",
                             f"multiple myeloma recorded ({cond['myeloma'][0]})", "clinical"))
    if "bone_metastasis" in cond:
        flags.append(RedFlag("bone_metastasis_history",
                             f"bone metastasis recorded ({cond['bone_metastasis'][0]})",
                             "clinical"))
    specific = list(cond.get("myeloma", [])) + list(cond.get("bone_metastasis", []))
    others = list(cond.get("cancer", []))
    for name in specific:  # the same Condition also matches the generic cancer concept
        if name in others:
            others.remove(name)
    if others:
        flags.append(RedFlag("cancer_history", f"history of cancer ({others[0]})", "clinical"))
    return flags


def _m_protein_sign(mp: LabValue | None, cfg: Mapping[str, Any]) -> str | None:
    """A positive (and not negated) monoclonal protein result, as shown in the flag."""
    if mp is None:
        return None
    text = (mp.text or "").lower()
    positive = (mp.value is not None and mp.value > 0) or (
        (mp.interpretation or "").upper() in cfg["m_protein_positive_interpretations"]
    ) or any(w in text for w in cfg["m_protein_positive_words"])
    negative = any(w in text for w in cfg["m_protein_negative_words"])
    if positive and not negative:
        shown = f"{mp.value:g} {mp.unit or ''}".strip() if mp.value is not None else text
        return f"monoclonal protein on electrophoresis ({shown})"
    return None


def _myeloma_signs(labs: Mapping[str, LabValue], cfg: Mapping[str, Any]) -> list[str]:
    """Laboratory signs of myeloma; low haemoglobin counts only next to another sign."""
    myeloma_signs: list[str] = []
    m_protein = _m_protein_sign(labs.get("m_protein"), cfg)
    if m_protein is not None:
        myeloma_signs.append(m_protein)
    flc = labs.get("flc_ratio")
    if flc is not None and flc.value is not None and not (
        float(cfg["flc_ratio_low"]) <= flc.value <= float(cfg["flc_ratio_high"])
    ):
        myeloma_signs.append(f"abnormal free light chain ratio {flc.value:g}")
    ca = labs.get("calcium")
    if ca is not None and ca.value is not None and ca.value > float(cfg["calcium_high_mmol_l"]):
        myeloma_signs.append(f"hypercalcaemia {ca.value:.2f} mmol/L")
    hb = labs.get("haemoglobin")
    if hb is not None and hb.value is not None and myeloma_signs \
            and hb.value < float(cfg["myeloma_haemoglobin_low_g_l"]):
        myeloma_signs.append(f"haemoglobin {hb.value:g} g/L")
    return myeloma_signs


def _alp_flag(alp: LabValue | None, cfg: Mapping[str, Any]) -> RedFlag | None:
    """Alkaline phosphatase above the lab's upper limit (or the configured one)."""
    if alp is None or not _lab_high(alp.value, alp.high, float(cfg["alp_upper_limit_u_l"])):
        return None
    limit = alp.high if alp.high is not None else float(cfg["alp_upper_limit_u_l"])
    return RedFlag("high_alp", f"alkaline phosphatase {alp.value:g} U/L above {limit:g} U/L",
                   "clinical")


def _anaemia_flag(rec: ClinicalRecord, cfg: Mapping[str, Any]) -> RedFlag | None:
    """Haemoglobin below the sex-specific limit with no recorded explanation."""
    hb = rec.labs.get("haemoglobin")
    if hb is None or hb.value is None or rec.sex not in ("female", "male"):
        return None
    limit = float(cfg["anaemia_hb_g_l"][rec.sex])
    explained = [n for n in rec.conditions if codes_explain_anaemia(n)]
    if hb.value < limit and not explained:
        return RedFlag("unexplained_anaemia",
                       f"haemoglobin {hb.value:g} g/L below {limit:g} g/L with no "
                       "recorded explanation", "clinical")
    return None


def clinical_flags(rec: ClinicalRecord) -> list[RedFlag]:
    cfg = _cfg()["labs"]
    flags = _history_flags(rec.conditions)
    myeloma_signs = _myeloma_signs(rec.labs, cfg)
    if myeloma_signs:
        flags.append(RedFlag("myeloma_labs", "; ".join(myeloma_signs), "clinical"))
    flags.extend(f for f in (_alp_flag(rec.labs.get("alp"), cfg), _anaemia_flag(rec, cfg))
                 if f is not None)
    return flags


def codes_explain_anaemia(concept: str) -> bool:
    entry = load("clinical_codes")["conditions"].get(concept, {})
    return bool(entry.get("anaemia_explained"))
