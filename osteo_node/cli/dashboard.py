"""``osteo-node dashboard ASSESSMENT.json [...] --html OUT``: a static export of patient
assessments written by ``osteo-node assess --json``, for when the web application cannot be
reached (red flags first, then highest risk).

A thin export of the web application's view: each assessment is rendered with the study page's
own template (``osteo_node/web/templates/assessment.html``), so the page and the application
show the same. The FLS works from the web application (``docs/web.md``), where an assessment
stored with ``assess --worklist`` appears on its study's page.

A file that cannot be read or is not an assessment is skipped with a message on stderr; the
page is still written. Exit status: 0 written, 2 no usable assessment.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "dashboard", help="static HTML export of patient assessments (the web app's view)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("assessments", nargs="+", type=Path, help="assessment JSON files")
    p.add_argument("--html", type=Path, required=True, help="output HTML file")
    p.add_argument("--title", default="osteo-node", help="page title")
    p.set_defaults(func=run)


def _read(path: Path) -> dict[str, Any] | None:
    from osteo_node.worklist.assessments import is_assessment

    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        print(f"osteo-node dashboard: {path}: not readable JSON ({exc}); skipped",
              file=sys.stderr)
        return None
    if not is_assessment(doc):
        print(f"osteo-node dashboard: {path}: not an osteo-node assessment; skipped",
              file=sys.stderr)
        return None
    return dict(doc)


def run(args: argparse.Namespace) -> int:
    from osteo_node.web.assessment_export import render_assessments

    docs = [d for d in (_read(p) for p in args.assessments) if d is not None]
    if not docs:
        print("osteo-node dashboard: no usable assessment", file=sys.stderr)
        return 2
    args.html.parent.mkdir(parents=True, exist_ok=True)
    args.html.write_text(render_assessments(docs, args.title), encoding="utf-8")
    print(f"{args.html}: {len(docs)} assessment(s)")
    return 0
