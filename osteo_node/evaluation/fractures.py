"""Fracture detection measured on real vertebrae deformed into compression fractures.

For every labelled case, every complete vertebral body in the graded range (T4-L5, not cut by
the scan) is deformed six times (wedge, biconcave, crush, each at two sizes; the sizes cycle
through grade 1, 2 and 3 losses from one vertebra to the next, ``LOSS_CYCLE``) by
:mod:`.synthetic_fractures`, sized so that the loss measured on the deformed reference body is
the requested one (:func:`~.synthetic_fractures.calibrated_deform`), and is also kept
undeformed (the control). Each version is analysed
by the pipeline under test (for a leave-one-case-out evaluation, the model trained without the
case). The **reference grade** is the project's own Genant grading on the deformed *reference*
labels (the deformation is applied to them too), so the reference does not depend on the
network. A case is positive when its reference grade is >= 2; the pipeline detects it when the
vertebra it found at that place has grade >= 2. Reported: accuracy (exact grade), sensitivity,
specificity, and the ROC AUC of the pipeline's height loss (a vertebra found but not graded, or
not found, scores 0).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from osteo_node.evaluation.synthetic_fractures import KINDS, FractureTarget, calibrated_deform
from osteo_node.pipeline.ct.analyser import CTAnalyser, Segmentation, SegmentFn
from osteo_node.pipeline.ct.column import find_canal
from osteo_node.pipeline.ct.evaluation import Case, reference_bodies
from osteo_node.pipeline.ct.references import reference_label_volume
from osteo_node.pipeline.ct.straighten import frame_for
from osteo_node.pipeline.results import AnalysisResult, ModelInfo, level_index
from osteo_node.pipeline.stages.grade import GradingRules
from osteo_node.pipeline.stages.volume import load_volume
from osteo_node.pipeline.types import LabelVolume, Volume

SIZES_PER_KIND = 2  # each vertebra: every kind at two of the three sizes
LOSS_CYCLE = (0.22, 0.33, 0.48)  # measured losses of Genant grade 1, 2 and 3 size
EDGE_MM = 10.0  # bodies closer than this to the first/last slice are not used
POSITIVE_GRADE = 2
REFERENCE_MODEL = ModelInfo("reference-labels", "n/a", "n/a", "n/a")


@dataclass
class FractureCase:
    case: str
    level: str
    kind: str  # wedge | biconcave | crush | none (the undeformed control)
    loss: float
    reference_grade: int | None
    reference_loss: float | None
    grade: int | None
    height_loss: float | None
    found_as: str | None  # level name the pipeline gave the vertebra at that place
    excluded: str = ""  # why the vertebra is not scored (empty: scored)
    held_out: bool = True  # False: the case is training data of the model under test

    @property
    def region(self) -> str:
        return "thoracic" if self.level.startswith("T") else "lumbar"


@dataclass
class FractureReport:
    cases: list[FractureCase]
    roc: list[tuple[float, float]]
    auc: float | None

    def _usable(self) -> list[FractureCase]:
        return [c for c in self.cases if c.reference_grade is not None and not c.excluded]

    @property
    def positives(self) -> list[FractureCase]:
        return [c for c in self._usable() if c.reference_grade >= POSITIVE_GRADE]  # type: ignore[operator]

    @property
    def negatives(self) -> list[FractureCase]:
        return [c for c in self._usable() if c.reference_grade < POSITIVE_GRADE]  # type: ignore[operator]

    @property
    def sensitivity(self) -> float | None:
        pos = self.positives
        return sum(_detected(c) for c in pos) / len(pos) if pos else None

    @property
    def specificity(self) -> float | None:
        neg = self.negatives
        return sum(not _detected(c) for c in neg) / len(neg) if neg else None

    @property
    def accuracy(self) -> float | None:
        usable = self._usable()
        return sum(c.grade == c.reference_grade for c in usable) / len(usable) if usable else None

    def group(self, held_out: bool | None = None, region: str | None = None
              ) -> FractureReport:
        """The report of a subset (its own ROC)."""
        rows = [c for c in self.cases if (held_out is None or c.held_out == held_out)
                and (region is None or c.region == region)]
        return report_of(rows)

    def summary(self) -> str:
        def f(v: float | None) -> str:
            return "-" if v is None else f"{v:.3f}"

        return (f"{len(self._usable())} scored ({sum(c.kind != 'none' for c in self._usable())}"
                f" deformed), positives {len(self.positives)}, negatives "
                f"{len(self.negatives)}: sensitivity {f(self.sensitivity)}, specificity "
                f"{f(self.specificity)}, grade accuracy {f(self.accuracy)}, ROC AUC "
                f"{f(self.auc)}")

    def to_json(self) -> dict[str, Any]:
        return {"cases": [asdict(c) | {"region": c.region} for c in self.cases],
                "auc": self.auc,
                "sensitivity": self.sensitivity, "specificity": self.specificity,
                "accuracy": self.accuracy, "positives": len(self.positives),
                "negatives": len(self.negatives), "roc": self.roc}


def _detected(c: FractureCase) -> bool:
    return c.grade is not None and c.grade >= POSITIVE_GRADE


def _candidates(labels: LabelVolume, bodies: NDArray[np.bool_], volume: Volume) -> list[str]:
    wanted = set(GradingRules.default().levels_measured)
    edge = EDGE_MM / volume.geometry.spacing[2]
    out = []
    for level, value in labels.levels.items():
        if level not in wanted:
            continue
        ks = np.flatnonzero(((labels.array == value) & bodies).any(axis=(1, 2)))
        if ks.size and ks[0] >= edge and ks[-1] <= volume.array.shape[0] - 1 - edge:
            out.append(level)
    return out


def _fixed(labels: NDArray[np.integer], levels: dict[str, int],
           bodies: NDArray[np.bool_]) -> SegmentFn:
    def segment(volume: Volume) -> Segmentation:
        lab = LabelVolume(labels, volume.geometry, dict(levels), {k: 1.0 for k in levels})
        return Segmentation(lab, bodies, REFERENCE_MODEL)

    return segment


def _at(result: AnalysisResult, labels: LabelVolume | None, body: NDArray[np.bool_]
        ) -> tuple[int | None, float | None, str | None]:
    """Grade, height loss and name of the analysed vertebra that overlaps ``body`` most."""
    if labels is None or result.status != "analysed":
        return None, None, None
    hits = labels.array[body]
    hits = hits[hits > 0]
    if hits.size == 0:
        return None, None, None
    value = int(np.bincount(hits).argmax())
    v = next((v for v in result.vertebrae if v.label_value == value), None)
    if v is None:
        return None, None, None
    return v.genant_grade, v.height_loss, v.level


def _disc_above(ref: LabelVolume, bodies: NDArray[np.bool_], level: str, volume: Volume,
                frame: Any) -> float:
    """Height (mm) of the disc above a body: from its top to the next body's bottom (median
    along the column), at least 4 mm."""
    names = list(ref.levels)
    values = sorted(ref.levels[n] for n in names if n != "S1")
    value = ref.levels[level]
    above = [v for v in values if v < value]  # VerSe values decrease cranially
    if not above:
        return 8.0

    def rows(v: int, q: float) -> float:
        idx = np.argwhere((ref.array == v) & bodies)[:, ::-1].astype(np.float64)
        z = frame.index_of(volume.geometry.index_to_lps(idx))[:, 0]
        return float(np.percentile(z, q))

    gap = (rows(max(above), 5) - rows(value, 95)) * frame.step
    return max(4.0, gap)


def _reference(volume: Volume, labels: NDArray[np.integer], levels: dict[str, int],
               bodies: NDArray[np.bool_]) -> AnalysisResult:
    """The project's own grading of the reference labels (no network involved)."""
    return CTAnalyser(segment=_fixed(labels, levels, bodies)).analyse_volume(volume).result


def _graded(result: AnalysisResult, level: str) -> tuple[int | None, float | None]:
    v = next((v for v in result.vertebrae if v.level == level), None)
    return (v.genant_grade, v.height_loss) if v else (None, None)


def _posterior_reference(result: AnalysisResult, level: str) -> float | None:
    """Median posterior height of the undeformed neighbours (grade 0) within the grading
    rules' ``neighbour_levels``: what a crush of ``level`` is measured against."""
    rules = GradingRules.default()
    idx = level_index(level)
    near = [v.heights_mm.posterior for v in result.vertebrae
            if v.level != level and v.heights_mm is not None and v.heights_mm.posterior
            and v.genant_grade == 0
            and 0 < abs(level_index(v.level) - idx) <= rules.neighbour_levels]
    return float(np.median(near)) if near else None


def _body_in(both: NDArray[np.integer], value: int) -> NDArray[np.bool_]:
    """The reference body of label ``value`` in a warped ``2 * label + body`` map."""
    return np.asarray(((both // 2) == value) & (both % 2 == 1))


def report_of(rows: list[FractureCase]) -> FractureReport:
    usable = [c for c in rows if c.reference_grade is not None and not c.excluded]
    pts, auc = roc_curve([c.height_loss or 0.0 if c.grade is not None else 0.0 for c in usable],
                         [bool(c.reference_grade >= POSITIVE_GRADE) for c in usable])  # type: ignore[operator]
    return FractureReport(rows, pts, auc)


def fracture_cases(case: Case, segment: SegmentFn) -> list[FractureCase]:
    """Deformed and undeformed versions of every usable vertebra of one labelled case."""
    volume = load_volume(case.input)
    ref = reference_label_volume(case.reference.vertebrae, case.reference.numbering,
                                 volume.geometry, volume.array.shape)
    bodies, _ = reference_bodies(case.reference, volume, ref)
    canal = find_canal(volume)
    if bodies is None or canal is None:
        return []
    frame = frame_for(canal, volume)
    levels = _candidates(ref, bodies, volume)
    analyser = CTAnalyser(segment=segment)
    control = analyser.analyse_volume(volume)
    reference = _reference(volume, ref.array, ref.levels, bodies)
    combined = ref.array.astype(np.uint16) * 2 + bodies
    out = []
    for i, level in enumerate(levels):
        value = ref.levels[level]
        body = (ref.array == value) & bodies
        g, hl = _graded(reference, level)
        pg, pl, name = _at(control.result, control.labels, body)
        if g is None or g >= POSITIVE_GRADE:
            # a reference body that is already deformed (a real fracture, or reference labels
            # that include something else, e.g. contrast in the canal) is no clean control
            # and no base for a designed fracture
            why = ("reference not gradable" if g is None else
                   f"reference body already Genant {g} before deformation")
            out.append(FractureCase(case.name, level, "none", 0.0, g, hl, pg, pl, name, why,
                                    case.held_out))
            continue
        out.append(FractureCase(case.name, level, "none", 0.0, g, hl, pg, pl, name,
                                held_out=case.held_out))
        for j, kind in enumerate(KINDS):
            for size in range(SIZES_PER_KIND):
                loss = LOSS_CYCLE[(i + j + size) % len(LOSS_CYCLE)]
                target = FractureTarget(kind, loss, _posterior_reference(reference, level),
                                        _disc_above(ref, bodies, level, volume, frame))
                if kind == "crush" and target.posterior_reference is None:
                    continue  # no undeformed neighbour to measure a crush against
                # labels and body reference warped together: value = 2 * label + body
                made = calibrated_deform(volume, combined, body, frame, target,
                                         body_after=partial(_body_in, value=value))
                lab2 = (made.labels // 2).astype(np.uint8)
                bodies2 = (made.labels % 2).astype(bool)
                body2 = (lab2 == value) & bodies2
                g, hl = _graded(_reference(made.volume, lab2, ref.levels, bodies2), level)
                res = analyser.analyse_volume(made.volume)
                pg, pl, name = _at(res.result, res.labels, body2)
                out.append(FractureCase(case.name, level, kind, loss, g, hl, pg, pl, name,
                                        held_out=case.held_out))
    return out


def roc_curve(scores: Sequence[float], labels: Sequence[bool]) -> tuple[list[tuple[float, float]],
                                                                       float | None]:
    """ROC points (FPR, TPR) over all thresholds and the area under the curve (trapezoids)."""
    pos = sum(labels)
    neg = len(labels) - pos
    if pos == 0 or neg == 0:
        return [], None
    order = sorted(zip(scores, labels, strict=True), key=lambda t: -t[0])
    pts = [(0.0, 0.0)]
    tp = fp = 0
    for k, (s, lab) in enumerate(order):
        tp += lab
        fp += not lab
        if k == len(order) - 1 or order[k + 1][0] != s:
            pts.append((fp / neg, tp / pos))
    auc = sum((x1 - x0) * (y0 + y1) / 2 for (x0, y0), (x1, y1) in itertools.pairwise(pts))
    return pts, float(auc)


def draw_roc(points: list[tuple[float, float]], auc: float | None, path: Path, title: str) -> None:
    from PIL import Image, ImageDraw

    size, pad = 420, 50
    img = Image.new("RGB", (size + 2 * pad, size + 2 * pad), "white")
    d = ImageDraw.Draw(img)
    d.rectangle([pad, pad, pad + size, pad + size], outline="black")
    d.line([pad, pad + size, pad + size, pad], fill=(180, 180, 180))
    for t in range(0, 11, 2):
        x = pad + size * t / 10
        y = pad + size - size * t / 10
        d.text((x - 8, pad + size + 6), f"{t / 10:.1f}", fill="black")
        d.text((pad - 30, y - 6), f"{t / 10:.1f}", fill="black")
    xy = [(pad + size * x, pad + size - size * y) for x, y in points]
    if len(xy) > 1:
        d.line(xy, fill=(200, 30, 30), width=3)
    d.text((pad, 15), title, fill="black")
    d.text((pad + size / 2 - 60, pad + size + 24), "1 - specificity", fill="black")
    d.text((5, pad - 20), "sensitivity", fill="black")
    d.text((pad + size / 2, pad + size - 30), f"AUC {auc:.3f}" if auc is not None else "AUC -",
           fill="black")
    img.save(path)


def evaluate_fractures(cases: Sequence[Case], segment_for: Callable[[Case], SegmentFn],
                       roc_png: Path | None = None) -> FractureReport:
    """Every case's deformed and undeformed vertebrae; the ROC PNG shows the held-out
    vertebrae (all of them when no case is held out)."""
    rows: list[FractureCase] = []
    for case in cases:
        if case.input.exists():
            rows.extend(fracture_cases(case, segment_for(case)))
    report = report_of(rows)
    shown = report.group(held_out=True) if any(c.held_out for c in rows) else report
    if roc_png is not None and shown.roc:
        draw_roc(shown.roc, shown.auc, roc_png,
                 f"grade >= 2 from the height loss ({len(shown._usable())} vertebrae)")
    return report


def print_fracture_report(r: FractureReport, leave_one_out: bool = True) -> None:
    """``leave_one_out``: each case was analysed by a model trained without it (else the
    numbers of the cases the model was trained on are training fit)."""
    def f(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}"

    print(f"{'case':14} {'level':5} {'kind':9} {'loss':>5} {'g_ref':>5} {'l_ref':>6} "
          f"{'grade':>5} {'loss':>6} found_as")
    for c in r.cases:
        print(f"{c.case:14} {c.level:5} {c.kind:9} {c.loss:5.2f} "
              f"{'-' if c.reference_grade is None else c.reference_grade:>5} "
              f"{f(c.reference_loss):>6} {'-' if c.grade is None else c.grade:>5} "
              f"{f(c.height_loss):>6} {c.found_as or '-'}"
              + (f"  (not scored: {c.excluded})" if c.excluded else ""))
    if not leave_one_out:
        print(f"FRACTURES (shipped model; training fit on its training cases): {r.summary()}")
        for region in ("thoracic", "lumbar"):
            g = r.group(region=region)
            if g.cases:
                print(f"  {region}: {g.summary()}")
        return
    print(f"FRACTURES (held-out cases): {r.group(held_out=True).summary()}")
    for held_out, region in itertools.product((True, False), ("thoracic", "lumbar")):
        g = r.group(held_out=held_out, region=region)
        if g.cases:
            what = "held out" if held_out else "training data"
            print(f"  {region} ({what}): {g.summary()}")
