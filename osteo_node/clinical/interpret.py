"""WHO / ISCD interpretation of a DXA exam (thresholds in ``clinical_data/dxa_who.yaml``).

- T-scores (WHO 1994) for postmenopausal women and men >= 50; Z-scores (ISCD) for
  premenopausal women and men < 50.
- Spine: ISCD level exclusion (a level differing by > 1.0 T-score from its neighbours, levels
  fractured on imaging), at least two evaluable levels.
- Overall category from the lowest valid site; forearm-only osteoporosis flagged; spine-hip
  discordance reported.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from osteo_node.clinical.dxa import DxaExam, LevelMeasurement, SiteMeasurement
from osteo_node.clinical_data import load

Basis = Literal["t_score", "z_score"]
MenopausalStatus = Literal["premenopausal", "postmenopausal", "unknown"]

T_CATEGORIES = ("osteoporosis", "osteopenia", "normal")  # worst first
Z_CATEGORIES = ("below_expected_range_for_age", "within_expected_range_for_age")


@dataclass(frozen=True)
class SiteInterpretation:
    site: str
    t_score: float | None
    z_score: float | None
    category: str | None
    used_levels: tuple[str, ...] = ()
    excluded_levels: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Discordance:
    present: bool
    major: bool
    spine_category: str
    hip_category: str
    hip_site: str


@dataclass
class DxaInterpretation:
    basis: Basis
    category: str | None
    lowest_site: str | None
    sites: dict[str, SiteInterpretation] = field(default_factory=dict)
    forearm_only_osteoporosis: bool = False
    discordance: Discordance | None = None
    notes: list[str] = field(default_factory=list)


def _cfg() -> dict[str, Any]:
    return load("dxa_who")


def choose_basis(age: float | None, sex: str | None, menopause: MenopausalStatus) -> Basis:
    """ISCD: Z-scores for premenopausal women and men < 50, T-scores otherwise."""
    z = _cfg()["z_score"]
    if sex == "male":
        return "z_score" if age is not None and age < z["men_z_score_below_age"] else "t_score"
    if sex == "female":
        if menopause == "premenopausal":
            return "z_score"
        if menopause == "postmenopausal":
            return "t_score"
        proxy = z["women_premenopausal_proxy_age_below"]
        return "z_score" if age is not None and age < proxy else "t_score"
    return "t_score"


def t_category(t: float) -> str:
    c = _cfg()["t_score_categories"]
    if t <= c["osteoporosis_at_or_below"]:
        return "osteoporosis"
    if t < c["normal"]:
        return "osteopenia"
    return "normal"


def z_category(z: float) -> str:
    return (
        "below_expected_range_for_age"
        if z <= _cfg()["z_score"]["below_expected_at_or_below"]
        else "within_expected_range_for_age"
    )


def spine_level_exclusions(levels: Iterable[LevelMeasurement]) -> tuple[list[str], list[str]]:
    """ISCD: exclude a level whose T-score differs by more than the limit from its adjacent
    evaluable levels. Among such levels the one farthest from the median is excluded first,
    then the rest is re-checked.
    Returns (used, excluded) level names."""
    cfg = _cfg()["spine_levels"]
    limit = float(cfg["exclude_if_t_differs_from_adjacent_by_more_than"])
    keep_at_least = int(cfg["minimum_evaluable_levels"])  # never exclude below the ISCD minimum
    kept = [lv for lv in levels if lv.t_score is not None]
    excluded: list[str] = []
    while len(kept) > keep_at_least:
        scores = sorted(lv.t_score for lv in kept if lv.t_score is not None)
        mid = len(scores) // 2
        median = scores[mid] if len(scores) % 2 else (scores[mid - 1] + scores[mid]) / 2
        candidates = []
        for i, lv in enumerate(kept):
            assert lv.t_score is not None
            neighbours = [kept[j] for j in (i - 1, i + 1) if 0 <= j < len(kept)]
            gaps = [abs(lv.t_score - n.t_score) for n in neighbours if n.t_score is not None]
            if gaps and min(gaps) > limit:
                candidates.append((abs(lv.t_score - median), lv))
        if not candidates:
            break
        worst = max(candidates, key=lambda c: c[0])[1]
        kept.remove(worst)
        excluded.append(worst.level)
    return [lv.level for lv in kept], excluded


def _interpret_spine(
    site: SiteMeasurement, basis: Basis, fractured: set[str]
) -> SiteInterpretation:
    cfg = _cfg()["spine_levels"]
    notes: list[str] = []
    t, z = site.t_score, site.z_score
    if not site.levels:
        hit = sorted(fractured & set(cfg["levels"]))
        if hit:
            notes.append(
                f"imaging shows fracture at {', '.join(hit)}: the reported L1-L4 value includes "
                "it and may overestimate BMD (ISCD: exclude fractured vertebrae); no per-level "
                "values to recompute"
            )
        return _site_result(site, t, z, basis, notes=notes)
    usable = [lv for lv in site.levels if lv.level not in fractured]
    excluded = [lv.level for lv in site.levels if lv.level in fractured]
    if excluded:
        notes.append(f"excluded as fractured on imaging: {', '.join(excluded)}")
    used, outliers = spine_level_exclusions(usable)
    if outliers:
        notes.append(
            f"excluded by ISCD rule (> {cfg['exclude_if_t_differs_from_adjacent_by_more_than']}"
            f" T-score from adjacent levels): {', '.join(outliers)}"
        )
    excluded += outliers
    limit = float(cfg["exclude_if_t_differs_from_adjacent_by_more_than"])
    pair = [lv.t_score for lv in site.levels if lv.level in used and lv.t_score is not None]
    if len(pair) == 2 and abs(pair[0] - pair[1]) > limit:
        notes.append(
            f"the two remaining levels ({'-'.join(used)}) differ by more than {limit} T-score: "
            "the anomalous one cannot be identified; spine not used for classification"
        )
        return SiteInterpretation(site.site, None, None, None, tuple(used), tuple(excluded),
                                  tuple(notes))
    if len(used) < int(cfg["minimum_evaluable_levels"]):
        notes.append(
            f"only {len(used)} evaluable level(s): spine not used for classification (ISCD: at "
            f"least {cfg['minimum_evaluable_levels']})"
        )
        return SiteInterpretation(site.site, None, None, None, tuple(used), tuple(excluded),
                                  tuple(notes))
    if excluded:
        kept = [lv for lv in site.levels if lv.level in used]
        ts = [lv.t_score for lv in kept if lv.t_score is not None]
        zs = [lv.z_score for lv in kept if lv.z_score is not None]
        t = sum(ts) / len(ts) if ts else None
        z = sum(zs) / len(zs) if len(zs) == len(kept) else None
        notes.append(
            f"spine score recomputed as the mean of {'-'.join(used)} level scores (approximation;"
            " prefer the densitometer's value for the remaining levels)"
        )
    return _site_result(
        site, t, z, basis, used=tuple(used), excluded=tuple(excluded), notes=notes
    )


def _site_result(
    site: SiteMeasurement, t: float | None, z: float | None, basis: Basis, *,
    used: tuple[str, ...] = (), excluded: tuple[str, ...] = (), notes: list[str] | None = None,
) -> SiteInterpretation:
    notes = list(notes or [])
    score = t if basis == "t_score" else z
    category = None
    if score is not None:
        category = t_category(score) if basis == "t_score" else z_category(score)
    else:
        notes.append(f"no {basis.replace('_', '-')} reported for {site.site}")
    return SiteInterpretation(site.site, t, z, category, used, excluded, tuple(notes))


def _rank(category: str, basis: Basis) -> int:
    order = T_CATEGORIES if basis == "t_score" else Z_CATEGORIES
    return order.index(category)


def interpret(
    exam: DxaExam,
    age: float | None,
    sex: str | None,
    menopause: MenopausalStatus = "unknown",
    fractured_levels: Iterable[str] = (),
) -> DxaInterpretation:
    cfg = _cfg()
    basis = choose_basis(age, sex, menopause)
    notes: list[str] = list(exam.warnings)
    if basis == "z_score":
        notes.append(
            "judged on Z-scores (ISCD: premenopausal women and men under 50); "
            "osteoporosis is not diagnosed from BMD alone in this group"
        )
    if sex is None:
        notes.append("sex unknown: T-score basis assumed")
    fractured = {lv.upper() for lv in fractured_levels}
    sites: dict[str, SiteInterpretation] = {}
    for name, site in exam.sites.items():
        if name == "lumbar_spine":
            sites[name] = _interpret_spine(site, basis, fractured)
        else:
            sites[name] = _site_result(site, site.t_score, site.z_score, basis)
    valid = {n: s for n, s in sites.items() if s.category is not None}
    result = DxaInterpretation(basis, None, None, sites, notes=notes)
    if not valid:
        return result
    order = list(cfg["sites"]["all"])

    def score_of(s: SiteInterpretation) -> float:
        v = s.t_score if basis == "t_score" else s.z_score
        return v if v is not None else 0.0

    lowest = min(valid.values(), key=lambda s: (score_of(s), order.index(s.site)))
    result.lowest_site = lowest.site
    result.category = lowest.category
    worst = T_CATEGORIES[0] if basis == "t_score" else Z_CATEGORIES[0]
    central = [valid[n] for n in cfg["sites"]["central"] if n in valid]
    forearm = [valid[n] for n in cfg["sites"]["forearm"] if n in valid]
    if any(s.category == worst for s in forearm) and not any(s.category == worst for s in central):
        result.forearm_only_osteoporosis = True
        which = ", ".join(s.site for s in central) or "no central site measured"
        notes.append(
            f"{'osteoporosis' if basis == 't_score' else 'low BMD for age'} at the 33% radius "
            f"only (central sites: {which}); forearm-only finding"
        )
    result.discordance = _discordance(valid, basis)
    return result


def _discordance(valid: dict[str, SiteInterpretation], basis: Basis) -> Discordance | None:
    cfg = _cfg()["discordance"]
    spine = valid.get(cfg["spine_site"])
    hips = [valid[h] for h in cfg["hip_sites"] if h in valid]
    if spine is None or not hips:
        return None
    assert spine.category is not None
    hip = min(hips, key=lambda s: _rank(s.category or "", basis))
    assert hip.category is not None
    present = spine.category != hip.category
    extremes = {T_CATEGORIES[0], T_CATEGORIES[-1]} if basis == "t_score" else set()
    major = present and {spine.category, hip.category} == extremes
    return Discordance(present, major, spine.category, hip.category, hip.site)
