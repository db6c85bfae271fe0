"""Read-only HTML dashboard rendered from patient assessments.

Input: assessment documents as written by ``osteo-node assess`` (``PatientAssessment.to_json``),
the same object the SR and the FLS worklist use. Output: one self-contained static HTML page (no
script, no external resources), one row per assessment, patients with pathological-fracture red
flags first, then by risk category. Every value is HTML-escaped. The page shows what the
assessment holds (age, sex, UIDs); it adds no identifiers of its own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from osteo_node.clinical_data import load

SITE_LABELS = {"lumbar_spine": "Spine", "femoral_neck": "Femoral neck", "total_hip": "Total hip",
               "radius_33": "33% radius"}

_STYLE = """
body{font-family:sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;width:100%}
th,td{border:1px solid #bbb;padding:4px 6px;vertical-align:top;text-align:left;font-size:90%}
th{background:#eee}
tr.flagged td{background:#fde2e2}
.cat-high{color:#a00;font-weight:bold}.cat-moderate{color:#a60}.cat-low{color:#060}
.note{color:#666;font-size:85%}
"""


def _e(value: Any) -> str:
    return escape("" if value is None else str(value))


def _fmt(value: Any, unit: str = "") -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:.1f}{unit}"
    return "-"


def _risk_rank(doc: Mapping[str, Any]) -> int:
    order = list(load("risk_qfracture")["categories"]["order"])
    cat = (doc.get("risk") or {}).get("category")
    return order.index(cat) if cat in order else -1


def _category_caveat() -> str:
    return " ".join(str(load("risk_qfracture")["categories"]["caveat"]).split())


def _sort_key(doc: Mapping[str, Any]) -> tuple[int, int]:
    return (0 if doc.get("red_flags") else 1, -_risk_rank(doc))


def _dxa_cell(dxa: Mapping[str, Any]) -> str:
    if not dxa.get("category"):
        return "-"
    lines = [f"<b>{_e(str(dxa['category']).replace('_', ' '))}</b> (lowest: "
             f"{_e(SITE_LABELS.get(str(dxa.get('lowest_site')), dxa.get('lowest_site')))})"]
    for site, s in (dxa.get("sites") or {}).items():
        score = s.get("t_score") if dxa.get("basis") != "z_score" else s.get("z_score")
        lines.append(f"{_e(SITE_LABELS.get(site, site))}: {_e(score)} "
                     f"{_e(str(s.get('category') or '').replace('_', ' '))}")
    if dxa.get("forearm_only_osteoporosis"):
        lines.append("<b>forearm-only osteoporosis</b>")
    disc = dxa.get("discordance")
    if isinstance(disc, Mapping) and disc.get("present"):
        lines.append("spine-hip discordance")
    return "<br>".join(lines)


def _risk_cell(risk: Mapping[str, Any]) -> str:
    cat = risk.get("category")
    if risk.get("major_fracture_10y") is None:
        head = f"{_e(risk.get('model'))}: not computed"
    else:
        head = (f"{_e(risk.get('model'))}: major {_fmt(risk.get('major_fracture_10y'), '%')}, "
                f"hip {_fmt(risk.get('hip_fracture_10y'), '%')} (10 y)"
                f"<br><span class=\"cat-{_e(cat)}\">{_e(cat)} risk</span>")
    missing = risk.get("missing_inputs") or []
    if missing:
        head += f"<br><span class=\"note\">missing: {_e(', '.join(map(str, missing)))}</span>"
    if risk.get("disclaimer"):  # ClinRisk's licence: shown alongside every QFracture risk
        head += (f"<br><span class=\"note\">ClinRisk Ltd. disclaimer: "
                 f"{_e(risk['disclaimer'])}</span>")
    return head


def _row(doc: Mapping[str, Any]) -> str:
    patient = doc.get("patient") or {}
    imaging = doc.get("imaging") or {}
    flags = doc.get("red_flags") or []
    factors = ", ".join(str(f.get("label")) for f in doc.get("risk_factors") or [])
    flag_html = "<br>".join(f"<b>{_e(f.get('code'))}</b>: {_e(f.get('reason'))}" for f in flags)
    if flags:
        flag_html += f"<br><i>{_e(doc.get('red_flag_action'))}</i>"
    age = patient.get("age")
    cells = [
        f"{_e(int(age) if isinstance(age, (int, float)) else '-')} / {_e(patient.get('sex'))}",
        _e(imaging.get("study_instance_uid") or "-"),
        _e(", ".join(imaging.get("vertebral_fracture_levels") or []) or "-"),
        _dxa_cell(doc.get("dxa") or {}),
        _risk_cell(doc.get("risk") or {}),
        _e(factors or "-"),
        flag_html or "-",
        _e(doc.get("summary")),
    ]
    cls = ' class="flagged"' if flags else ""
    return f"<tr{cls}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def render_dashboard(assessments: Sequence[Mapping[str, Any]], title: str = "osteo-node") -> str:
    """Static HTML page listing the assessments (red flags first, then highest risk)."""
    from osteo_node import DISCLAIMER

    heads = ["Age / sex", "Study UID", "Vertebral fracture (imaging)", "DXA", "Fracture risk",
             "Risk factors", "Red flags", "Summary"]
    rows = "\n".join(_row(d) for d in sorted(assessments, key=_sort_key))
    n_flag = sum(1 for d in assessments if d.get("red_flags"))
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{_e(title)} - patient assessments</title><style>{_STYLE}</style></head><body>\n"
        f"<h1>{_e(title)}: patient assessments</h1>\n"
        f"<p>{len(assessments)} assessment(s), {n_flag} with possible pathological fracture."
        f"</p>\n<p class=\"note\">{_e(DISCLAIMER)}</p>\n"
        f"<p class=\"note\">{_e(_category_caveat())}</p>\n"
        "<table><thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in heads)
        + f"</tr></thead><tbody>\n{rows}\n</tbody></table>\n</body></html>\n"
    )
