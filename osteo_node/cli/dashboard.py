"""``osteo-node dashboard ASSESSMENT.json [...] --html OUT``: read-only HTML page of patient
assessments written by ``osteo-node assess --json`` (red flags first, then highest risk).

A file that cannot be read or is not an assessment is skipped with a message on stderr; the
page is still written. Exit status: 0 written, 2 no usable assessment.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REQUIRED_KEYS = ("patient", "dxa", "risk", "red_flags", "summary")


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "dashboard", help="read-only HTML page of patient assessments (osteo-node assess JSON)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("assessments", nargs="+", type=Path, help="assessment JSON files")
    p.add_argument("--html", type=Path, required=True, help="output HTML file")
    p.add_argument("--title", default="osteo-node", help="page title")
    p.set_defaults(func=run)


def _read(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        print(f"osteo-node dashboard: {path}: not readable JSON ({exc}); skipped",
              file=sys.stderr)
        return None
    if not isinstance(doc, dict) or not all(k in doc for k in REQUIRED_KEYS):
        print(f"osteo-node dashboard: {path}: not an osteo-node assessment; skipped",
              file=sys.stderr)
        return None
    return doc


def run(args: argparse.Namespace) -> int:
    from osteo_node.clinical.dashboard import render_dashboard

    docs = [d for d in (_read(p) for p in args.assessments) if d is not None]
    if not docs:
        print("osteo-node dashboard: no usable assessment", file=sys.stderr)
        return 2
    args.html.parent.mkdir(parents=True, exist_ok=True)
    args.html.write_text(render_dashboard(docs, args.title), encoding="utf-8")
    print(f"{args.html}: {len(docs)} assessment(s)")
    return 0
