"""A static, self-contained HTML page of patient assessments (``osteo-node dashboard``,
``osteo-node assess --html``), rendered with the web application's own templates: each
assessment is the study page's clinical section (``assessment.html``), the risk model's
disclaimer and the decision-support disclaimer appear once per page, the style sheet is the
application's, inlined (no script, nothing fetched). Red flags first, then highest risk.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jinja2

from osteo_node.clinical_data import load
from osteo_node.web import display

HERE = Path(__file__).parent


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(HERE / "templates")),
                             autoescape=True)
    env.globals.update(display.template_globals())
    return env


def _sort_key(doc: Mapping[str, Any]) -> tuple[int, int]:
    order = list(load("risk_qfracture")["categories"]["order"])
    category = (doc.get("risk") or {}).get("category")
    rank = order.index(category) if category in order else -1
    return (0 if doc.get("red_flags") else 1, -rank)


def render_assessments(docs: Sequence[Mapping[str, Any]], title: str = "osteo-node") -> str:
    """The page over ``docs`` (``osteo-node assess`` JSON documents)."""
    from osteo_node import DISCLAIMER

    ordered = sorted(docs, key=_sort_key)
    return _environment().get_template("assessments_export.html").render(
        title=title, docs=ordered, disclaimer=DISCLAIMER,
        n_flagged=sum(1 for d in docs if d.get("red_flags")),
        css=(HERE / "static" / "app.css").read_text(encoding="utf-8"))
