"""``osteo-node evaluate [CASES.yaml] [--data DIR] [--loo DIR] [--reference-segmentation]
[--fractures] [--roc PNG] [--json OUT]``.

Runs the CT analyser over labelled real cases (default ``benchmarks/ct_cases.yaml``, paths
relative to the shared data folder) and prints per case and overall: level accuracy (same name
and centroid within 10 mm of the reference vertebra; reference vertebrae with less than 2 ml of
body in view, a spinous process tip at the edge of the scan, are listed, not scored), body Dice
(against the case's body reference, or one derived from its whole-vertebra labels), centroid
error, the density level's
trabecular HU against the reference body eroded by 3 mm and against the analyser's own ROI drawn
on the reference body (like for like: the eroded body keeps the dense subcortical shell), the
complete bodies T4-L5 that got a Genant grade, and grade agreement with the grades computed on
the reference labels.

``--loo DIR``: leave-one-case-out. Each case is analysed with the model trained WITHOUT it
(``DIR/<fold>/model.json``, written by ``ai_models/ct_sagittal/train.py --exclude`` and
``export.py``): held-out numbers. Without it, the shipped model is used: on the cases it was
trained on, that is training fit. A case marked ``held_out: false`` in the case list (a
reference that is not independent of the shipped model, e.g. the chest series whose reference
is that model's own output) always uses the shipped model and is marked "training data" in
the output.

``--fractures``: fracture detection on real vertebrae deformed into wedge, biconcave and crush
fractures of grades 1-3 and on the undeformed ones (``osteo_node.evaluation.fractures``):
accuracy, sensitivity and specificity for grade >= 2, ROC AUC of the height loss; ``--roc``
writes the ROC curve as a PNG.

``--reference-segmentation`` scores the measurement chain alone (segmentation = reference).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "evaluate", help="score the CT analyser on labelled real cases",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("cases", nargs="?", type=Path, default=REPO / "benchmarks" / "ct_cases.yaml")
    p.add_argument("--data", type=Path, default=None,
                   help="shared data folder (default $OSTEO_SHARED_DATA or ../shared/data)")
    p.add_argument("--loo", type=Path, default=None, metavar="DIR",
                   help="leave-one-case-out: folder of per-case models trained without it")
    p.add_argument("--only", nargs="*", default=None, help="evaluate only these case names")
    p.add_argument("--reference-segmentation", action="store_true",
                   help="use the reference labels as segmentation (measurement-only check)")
    p.add_argument("--fractures", action="store_true",
                   help="also measure fracture detection on deformed real vertebrae")
    p.add_argument("--roc", type=Path, default=None, help="ROC curve PNG (with --fractures)")
    p.add_argument("--json", type=Path, dest="json_out", help="also write the scores as JSON")
    p.set_defaults(func=run)


def _fmt(v: float | None, spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec)


def _segment_for(args: argparse.Namespace, case: Any) -> Any:
    from osteo_node.models import load_model
    from osteo_node.pipeline.ct.analyser import default_segment_fn
    from osteo_node.pipeline.ct.evaluation import reference_segment_fn
    from osteo_node.pipeline.ct.segment import segment_with

    if args.reference_segmentation:
        return reference_segment_fn(case.reference)
    if args.loo is not None and case.held_out:
        return segment_with(load_model(args.loo / case.fold))
    return default_segment_fn()


def _print_case(s: Any, held_out: bool) -> dict[str, Any]:
    if s.status != "analysed":
        print(f"{s.name:16} NOT ANALYSABLE: {s.reason}")
    if not held_out:
        print(f"{s.name:16} (training data, not held out: these numbers are training fit)")
    for lv in s.levels:
        print(f"{s.name:16} {lv.level:5} {lv.found!s:5} {'y' if lv.correct else 'n':3} "
              f"{_fmt(lv.centroid_error_mm, '.1f'):>6} {_fmt(lv.dice):>5} "
              f"{_fmt(lv.vertebra_dice):>5} {_fmt(lv.hu, '.1f'):>7} "
              f"{_fmt(lv.hu_reference, '.1f'):>7} {_fmt(lv.grade, 'd'):>5} "
              f"{_fmt(lv.grade_reference, 'd'):>5} {'y' if lv.complete else '-':>4} "
              f"{'y' if lv.graded else '-':>6}{'' if lv.in_view else '  (fragment, not scored)'}")
    graded, complete = s.graded_complete
    row = {
        "case": s.name, "held_out": held_out, "status": s.status, "reason": s.reason,
        "level_accuracy": s.level_accuracy, "body_reference": s.body_reference,
        "mean_body_dice": s.mean_dice, "mean_centroid_error_mm": s.mean_centroid_error,
        "density_level": s.density_level, "density_hu": s.density_hu,
        "density_hu_reference": s.density_hu_reference,
        "density_hu_difference": s.density_difference,
        "density_hu_reference_roi": s.density_hu_reference_roi,
        "density_hu_roi_difference": s.density_roi_difference,
        "l1_hu_difference": s.hu_difference("L1"),
        "mean_abs_hu_difference": s.mean_abs_hu_difference,
        "complete_bodies_graded": graded, "complete_bodies": complete,
        "grade_agreement": s.grade_agreement, "extra_levels": s.extra_levels,
        "timings_s": s.timings_s,
    }
    print(f"  -> {s.name}: level accuracy {_fmt(s.level_accuracy)}, body Dice "
          f"{_fmt(s.mean_dice, '.3f')} ({s.body_reference} reference), centroid error "
          f"{_fmt(s.mean_centroid_error, '.1f')} mm, density {s.density_level or '-'} "
          f"{_fmt(s.density_hu, '.1f')} HU vs {_fmt(s.density_hu_reference, '.1f')} "
          f"(diff {_fmt(s.density_difference, '.1f')}; same ROI on the reference body "
          f"{_fmt(s.density_hu_reference_roi, '.1f')}, diff "
          f"{_fmt(s.density_roi_difference, '.1f')}), complete bodies graded "
          f"{graded}/{complete}, grade agreement {_fmt(s.grade_agreement)}, extra levels "
          f"{s.extra_levels or '-'}")
    return row


def _overall(scores: list[Any]) -> dict[str, Any]:
    all_levels = [lv for s in scores for lv in s.scored]
    dices = [lv.dice for lv in all_levels if lv.dice is not None]
    errs = [lv.centroid_error_mm for lv in all_levels if lv.centroid_error_mm is not None]
    hud = [abs(s.density_difference) for s in scores if s.density_difference is not None]
    hur = [abs(s.density_roi_difference) for s in scores
           if s.density_roi_difference is not None]
    gpairs = [(lv.grade, lv.grade_reference) for lv in all_levels
              if lv.grade is not None and lv.grade_reference is not None]
    graded = sum(s.graded_complete[0] for s in scores)
    complete = sum(s.graded_complete[1] for s in scores)
    return {
        "levels": len(all_levels),
        "level_accuracy": sum(lv.correct for lv in all_levels) / len(all_levels)
        if all_levels else None,
        "mean_body_dice": sum(dices) / len(dices) if dices else None,
        "mean_centroid_error_mm": sum(errs) / len(errs) if errs else None,
        "mean_abs_density_hu_difference": sum(hud) / len(hud) if hud else None,
        "mean_abs_density_hu_roi_difference": sum(hur) / len(hur) if hur else None,
        "complete_bodies_graded": graded, "complete_bodies": complete,
        "grade_agreement": sum(a == b for a, b in gpairs) / len(gpairs) if gpairs else None,
    }


def _missing_file(case: Any) -> Path | None:
    """The first input or reference file of ``case`` that does not exist (shared data not
    mounted; the chest reference is made by benchmarks/references/make_chest_reference.py,
    not kept in the repository)."""
    ref = case.reference
    for path in (case.input, ref.vertebrae, ref.bodies):
        if path is not None and not Path(path).exists():
            return Path(path)
    return None


def run(args: argparse.Namespace) -> int:
    from osteo_node.pipeline.ct.evaluation import load_cases, score_case

    root = args.data or Path(os.environ.get("OSTEO_SHARED_DATA", REPO.parent / "shared" / "data"))
    if not args.cases.is_file():
        print(f"error: case list {args.cases} not found", file=sys.stderr)
        return 2
    if args.loo is not None and not args.loo.is_dir():
        print(f"error: leave-one-case-out model folder {args.loo} not found", file=sys.stderr)
        return 2
    cases = [c for c in load_cases(args.cases, root.resolve())
             if args.only is None or c.name in args.only]
    missing = {c.name: _missing_file(c) for c in cases}
    for name, path in missing.items():
        if path is not None:
            print(f"{name}: skipped, {path} not found")
    cases = [c for c in cases if missing[c.name] is None]
    source = ("reference labels" if args.reference_segmentation
              else f"leave-one-case-out models from {args.loo}" if args.loo
              else "shipped model (training fit on the cases it was trained on)")
    print(f"segmentation: {source}")
    scores, held_out = [], []
    for case in cases:
        print(f"[evaluate] {case.name}", file=sys.stderr, flush=True)
        scores.append(score_case(case, _segment_for(args, case)))
        held_out.append(case.held_out or args.reference_segmentation)
    print(f"{'case':16} {'level':5} {'found':5} {'ok':3} {'c_err':>6} {'bDice':>5} "
          f"{'vDice':>5} {'HU':>7} {'HU_ref':>7} {'grade':>5} {'g_ref':>5} {'cmpl':>4} "
          f"{'graded':>6}")
    rows = [_print_case(s, h) for s, h in zip(scores, held_out, strict=True)]
    # the overall line counts the held-out cases only (with --loo); training data is apart
    overall = _overall([s for s, h in zip(scores, held_out, strict=True) if h or not args.loo])
    print(f"OVERALL ({overall['levels']} reference levels): level accuracy "
          f"{_fmt(overall['level_accuracy'])}, body Dice {_fmt(overall['mean_body_dice'], '.3f')}"
          f", centroid error {_fmt(overall['mean_centroid_error_mm'], '.1f')} mm, mean |density "
          f"HU diff| {_fmt(overall['mean_abs_density_hu_difference'], '.1f')} (same ROI on the "
          f"reference body: {_fmt(overall['mean_abs_density_hu_roi_difference'], '.1f')}), "
          f"complete bodies "
          f"graded {overall['complete_bodies_graded']}/{overall['complete_bodies']}, grade "
          f"agreement {_fmt(overall['grade_agreement'])}")
    report: dict[str, Any] = {"cases": rows, "overall": overall}
    if args.fractures:
        from osteo_node.evaluation.fractures import evaluate_fractures, print_fracture_report

        fr = evaluate_fractures(cases, lambda c: _segment_for(args, c), roc_png=args.roc)
        print_fracture_report(fr, leave_one_out=args.loo is not None)
        report["fractures"] = fr.to_json()
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(report, indent=2))
    return 0
