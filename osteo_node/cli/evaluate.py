"""``osteo-node evaluate [CASES.yaml] [--data DIR] [--reference-segmentation]``.

Runs the CT analyser over labelled real cases (default ``benchmarks/ct_cases.yaml``, paths
relative to the shared data folder) and prints per-case and overall: level accuracy (same name
and centroid within 10 mm of the reference vertebra), body Dice (vertebra Dice where the
reference has no body masks), centroid error, trabecular HU difference vs the eroded reference
body mask, and Genant grade agreement with the grades computed on the reference labels.
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
    p.add_argument("--reference-segmentation", action="store_true",
                   help="use the reference labels as segmentation (measurement-only check)")
    p.add_argument("--json", type=Path, dest="json_out", help="also write the scores as JSON")
    p.set_defaults(func=run)


def _fmt(v: float | None, spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec)


def run(args: argparse.Namespace) -> int:
    from osteo_node.pipeline.ct.analyser import SegmentFn, default_segment_fn
    from osteo_node.pipeline.ct.evaluation import load_cases, reference_segment_fn, score_case

    root = args.data or Path(os.environ.get("OSTEO_SHARED_DATA", REPO.parent / "shared" / "data"))
    if not args.cases.is_file():
        print(f"error: case list {args.cases} not found", file=sys.stderr)
        return 2
    cases = load_cases(args.cases, root.resolve())
    scores = []
    for case in cases:
        if not case.input.exists():
            print(f"{case.name}: input {case.input} missing, skipped", file=sys.stderr)
            continue
        seg: SegmentFn = (reference_segment_fn(case.reference) if args.reference_segmentation
                          else default_segment_fn())
        print(f"[evaluate] {case.name}", file=sys.stderr, flush=True)
        scores.append(score_case(case, seg))
    rows: list[dict[str, Any]] = []
    print(f"{'case':28} {'level':6} {'found':5} {'ok':3} {'c_err':>6} {'dice':>5} "
          f"{'HU':>7} {'HU_ref':>7} {'grade':>5} {'g_ref':>5}")
    for s in scores:
        if s.status != "analysed":
            print(f"{s.name:28} NOT ANALYSABLE: {s.reason}")
        for lv in s.levels:
            print(f"{s.name:28} {lv.level:6} {lv.found!s:5} {'y' if lv.correct else 'n':3} "
                  f"{_fmt(lv.centroid_error_mm, '.1f'):>6} {_fmt(lv.dice):>5} "
                  f"{_fmt(lv.hu, '.1f'):>7} {_fmt(lv.hu_reference, '.1f'):>7} "
                  f"{_fmt(lv.grade, 'd'):>5} {_fmt(lv.grade_reference, 'd'):>5}")
        row = {
            "case": s.name, "status": s.status, "reason": s.reason,
            "level_accuracy": s.level_accuracy, "dice_kind": s.dice_kind,
            "mean_dice": s.mean_dice, "mean_centroid_error_mm": s.mean_centroid_error,
            "l1_hu_difference": s.hu_difference("L1"),
            "mean_abs_hu_difference": s.mean_abs_hu_difference,
            "grade_agreement": s.grade_agreement, "extra_levels": s.extra_levels,
            "timings_s": s.timings_s,
        }
        rows.append(row)
        print(f"  -> {s.name}: level accuracy {_fmt(s.level_accuracy)}, {s.dice_kind} Dice "
              f"{_fmt(s.mean_dice, '.3f')}, centroid error {_fmt(s.mean_centroid_error, '.1f')} "
              f"mm, L1 HU diff {_fmt(s.hu_difference('L1'), '.1f')}, mean |HU diff| "
              f"{_fmt(s.mean_abs_hu_difference, '.1f')}, grade agreement "
              f"{_fmt(s.grade_agreement)}, extra levels {s.extra_levels or '-'}")
    all_levels = [lv for s in scores for lv in s.levels]
    dices = [lv.dice for lv in all_levels if lv.dice is not None]
    errs = [lv.centroid_error_mm for lv in all_levels if lv.centroid_error_mm is not None]
    hud = [abs(lv.hu - lv.hu_reference) for lv in all_levels
           if lv.hu is not None and lv.hu_reference is not None]
    gpairs = [(lv.grade, lv.grade_reference) for lv in all_levels
              if lv.grade is not None and lv.grade_reference is not None]
    overall = {
        "levels": len(all_levels),
        "level_accuracy": sum(lv.correct for lv in all_levels) / len(all_levels)
        if all_levels else None,
        "mean_dice": sum(dices) / len(dices) if dices else None,
        "mean_centroid_error_mm": sum(errs) / len(errs) if errs else None,
        "mean_abs_hu_difference": sum(hud) / len(hud) if hud else None,
        "grade_agreement": sum(a == b for a, b in gpairs) / len(gpairs) if gpairs else None,
    }
    print(f"OVERALL ({overall['levels']} reference levels): level accuracy "
          f"{_fmt(overall['level_accuracy'])}, Dice {_fmt(overall['mean_dice'], '.3f')}, "
          f"centroid error {_fmt(overall['mean_centroid_error_mm'], '.1f')} mm, mean |HU diff| "
          f"{_fmt(overall['mean_abs_hu_difference'], '.1f')}, grade agreement "
          f"{_fmt(overall['grade_agreement'])}")
    if args.json_out is not None:
        args.json_out.write_text(json.dumps({"cases": rows, "overall": overall}, indent=2))
    return 0
