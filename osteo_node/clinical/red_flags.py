"""Red flags for a pathological (non-osteoporotic) vertebral fracture.

Three sources, all with thresholds in ``clinical_data/red_flags.yaml``:

- :func:`body_texture` looks at the HU inside one vertebral body (a CT volume plus the body
  mask): focal lytic or sclerotic clusters and heterogeneous attenuation.
- :func:`imaging_flags` reads an ``osteo-node analyze`` result (dict from ``to_json``): fractures
  above T7, and per-vertebra signs an analyser reports (``texture`` from :func:`body_texture`,
  ``posterior_wall_convex``, ``pedicle_involved``).
- :func:`clinical_flags` reads a :class:`ClinicalRecord`: cancer / myeloma history, myeloma
  labs, high ALP, unexplained anaemia.

Posterior wall convexity and pedicle involvement are not measured here (they need body-aligned
geometry and posterior-element segmentation at better than 3 mm); they are taken from the
imaging analysis when it reports them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from osteo_node.clinical.fhir_intake import ClinicalRecord
from osteo_node.clinical_data import load
from osteo_node.pipeline.results import LEVELS, level_index

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
    """HU texture of one vertebral body (trabecular compartment)."""

    reference_hu: float  # median HU of the eroded body
    spread_hu: float  # 1.4826 * MAD of the 3x3x3-median-filtered HU
    lytic_cluster_mm3: float  # largest focal low-attenuation cluster
    sclerotic_cluster_mm3: float  # largest focal high-attenuation cluster
    voxels: int
    focal_lytic: bool
    focal_sclerotic: bool
    heterogeneous: bool

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _cfg() -> dict[str, Any]:
    return load("red_flags")


def action() -> str:
    return str(_cfg()["action"])


def _masked_median3(hu: NDArray[np.float32], mask: NDArray[np.bool_]) -> NDArray[np.float64]:
    """3x3x3 median of the voxels inside ``mask`` (outside voxels do not contribute)."""
    ks, js, is_ = np.nonzero(mask)
    lo = np.maximum(np.array([ks.min(), js.min(), is_.min()]) - 1, 0)
    hi = np.array([ks.max(), js.max(), is_.max()]) + 2
    sub = np.where(mask, hu, np.nan)[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]].astype(np.float64)
    padded = np.pad(sub, 1, constant_values=np.nan)
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3, 3))
    flat = windows.reshape(*sub.shape, 27)
    out = np.full(hu.shape, np.nan)
    inner = mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    filtered = np.full(sub.shape, np.nan)
    filtered[inner] = np.nanmedian(flat[inner], axis=-1)
    out[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = filtered
    return out


def _largest_cluster(mask: NDArray[np.bool_]) -> int:
    labels, n = ndimage.label(mask)
    if n == 0:
        return 0
    return int(np.bincount(labels.ravel())[1:].max())


def body_texture(
    hu: NDArray[np.float32], body_mask: NDArray[np.bool_], spacing_mm: Sequence[float]
) -> BodyTexture | None:
    """Texture of one vertebral body; ``None`` when the body is too small to judge.

    ``hu`` and ``body_mask`` are arrays on the same grid; ``spacing_mm`` is the voxel size in
    any axis order (only the voxel volume is used).
    """
    cfg = _cfg()["texture"]
    mask = np.asarray(body_mask, dtype=bool)
    erode = int(cfg["erode_voxels"])
    inner = ndimage.binary_erosion(mask, iterations=erode) if erode > 0 else mask
    if int(inner.sum()) < int(cfg["min_body_voxels"]):
        return None
    values = np.asarray(hu, dtype=np.float32)[inner]
    ref = float(np.median(values))
    filtered = _masked_median3(np.asarray(hu, dtype=np.float32), inner)
    smooth = filtered[inner]
    spread = float(1.4826 * np.median(np.abs(smooth - np.median(smooth))))
    voxel_mm3 = float(np.prod(np.asarray(spacing_mm, dtype=np.float64)))
    with np.errstate(invalid="ignore"):
        low = inner & (filtered < ref - float(cfg["lytic_delta_hu"]))
        high = inner & (filtered > ref + float(cfg["sclerotic_delta_hu"]))
    lytic = _largest_cluster(low) * voxel_mm3
    sclerotic = _largest_cluster(high) * voxel_mm3
    min_mm3 = float(cfg["min_cluster_mm3"])
    return BodyTexture(
        reference_hu=ref, spread_hu=spread, lytic_cluster_mm3=lytic,
        sclerotic_cluster_mm3=sclerotic, voxels=int(inner.sum()),
        focal_lytic=lytic >= min_mm3, focal_sclerotic=sclerotic >= min_mm3,
        heterogeneous=spread > float(cfg["heterogeneous_spread_hu"]),
    )


def texture_flags(level: str | None, tex: BodyTexture) -> list[RedFlag]:
    where = f" in {level}" if level else ""
    flags: list[RedFlag] = []
    if tex.focal_lytic:
        flags.append(RedFlag(
            "focal_lytic_area",
            f"focal lytic area{where}: {tex.lytic_cluster_mm3:.0f} mm3 more than "
            f"{_cfg()['texture']['lytic_delta_hu']} HU below the body median "
            f"({tex.reference_hu:.0f} HU)", "imaging", level))
    if tex.focal_sclerotic:
        flags.append(RedFlag(
            "focal_sclerotic_area",
            f"focal sclerotic area{where}: {tex.sclerotic_cluster_mm3:.0f} mm3 more than "
            f"{_cfg()['texture']['sclerotic_delta_hu']} HU above the body median", "imaging",
            level))
    if tex.heterogeneous:
        flags.append(RedFlag(
            "heterogeneous_hu",
            f"heterogeneous attenuation{where}: robust HU spread {tex.spread_hu:.0f} HU",
            "imaging", level))
    return flags


def _texture_from_json(d: Mapping[str, Any]) -> BodyTexture | None:
    try:
        return BodyTexture(**{k: d[k] for k in BodyTexture.__dataclass_fields__})
    except (KeyError, TypeError):
        return None


def imaging_flags(analysis: Mapping[str, Any]) -> list[RedFlag]:
    """Red flags from an ``analyze`` result dict (schema of AnalysisResult.to_json)."""
    cfg = _cfg()["level"]
    cranial_limit = level_index(str(cfg["fracture_cranial_to"]))
    min_grade = int(cfg["min_genant_grade"])
    findings = analysis.get("findings") or {}
    fractured = {str(lv) for lv in findings.get("vcf_levels") or []}
    flags: list[RedFlag] = []
    for v in analysis.get("vertebrae") or []:
        if not isinstance(v, Mapping):
            continue
        level = str(v.get("level"))
        grade = v.get("genant_grade")
        if isinstance(grade, int) and grade >= min_grade:
            fractured.add(level)
        tex = _texture_from_json(v.get("texture") or {})
        if tex is not None:
            flags.extend(texture_flags(level, tex))
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


def clinical_flags(rec: ClinicalRecord) -> list[RedFlag]:
    cfg = _cfg()["labs"]
    flags: list[RedFlag] = []
    cond = rec.conditions
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
    labs = rec.labs
    myeloma_signs: list[str] = []
    mp = labs.get("m_protein")
    if mp is not None:
        text = (mp.text or "").lower()
        positive = (mp.value is not None and mp.value > 0) or (
            (mp.interpretation or "").upper() in cfg["m_protein_positive_interpretations"]
        ) or any(w in text for w in cfg["m_protein_positive_words"])
        negative = any(w in text for w in cfg["m_protein_negative_words"])
        if positive and not negative:
            shown = f"{mp.value:g} {mp.unit or ''}".strip() if mp.value is not None else text
            myeloma_signs.append(f"monoclonal protein on electrophoresis ({shown})")
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
    if myeloma_signs:
        flags.append(RedFlag("myeloma_labs", "; ".join(myeloma_signs), "clinical"))
    alp = labs.get("alp")
    if alp is not None and _lab_high(alp.value, alp.high, float(cfg["alp_upper_limit_u_l"])):
        limit = alp.high if alp.high is not None else float(cfg["alp_upper_limit_u_l"])
        flags.append(RedFlag("high_alp",
                             f"alkaline phosphatase {alp.value:g} U/L above {limit:g} U/L",
                             "clinical"))
    if hb is not None and hb.value is not None and rec.sex in ("female", "male"):
        limit = float(cfg["anaemia_hb_g_l"][rec.sex])
        explained = [n for n in cond if codes_explain_anaemia(n)]
        if hb.value < limit and not explained:
            flags.append(RedFlag("unexplained_anaemia",
                                 f"haemoglobin {hb.value:g} g/L below {limit:g} g/L with no "
                                 "recorded explanation", "clinical"))
    return flags


def codes_explain_anaemia(concept: str) -> bool:
    entry = load("clinical_codes")["conditions"].get(concept, {})
    return bool(entry.get("anaemia_explained"))
