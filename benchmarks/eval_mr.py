"""Evaluate the MR analyser on the fixed validation split (same as ``osteo-node evaluate-mr``).

Usage (repo root):
    .venv/bin/python benchmarks/eval_mr.py [--thick 4] [--json results.json]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from osteo_node.cli import evaluate_mr  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="eval_mr")
    sub = parser.add_subparsers(dest="command")
    evaluate_mr.add_parser(sub)
    args = parser.parse_args(["evaluate-mr", *(sys.argv[1:] if argv is None else argv)])
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
