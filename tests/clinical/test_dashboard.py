"""Read-only dashboard page from patient assessments (the same object the SR and worklist use)."""

from __future__ import annotations

import json
from datetime import date
from html.parser import HTMLParser
from pathlib import Path

import pytest

from osteo_node.cli.main import main
from osteo_node.clinical.assessment import build_assessment
from osteo_node.clinical.dashboard import render_dashboard
from osteo_node.clinical.fhir_intake import record_from_resources
from tests.clinical import fhir_data as fd

TODAY = date(2026, 11, 22)


class _Table(HTMLParser):
    """Collects the text of each table row and checks every opened tag is closed."""

    VOID = frozenset({"br", "meta"})

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[str] = []
        self.row_classes: list[str | None] = []
        self.stack: list[str] = []
        self._in_row = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in self.VOID:
            self.stack.append(tag)
        if tag == "tr":
            self.rows.append("")
            self.row_classes.append(dict(attrs).get("class"))
            self._in_row = True
        if tag == "script":
            raise AssertionError("the page must not contain script")

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, (tag, self.stack)
        self.stack.pop()
        if tag == "tr":
            self._in_row = False

    def handle_data(self, data: str) -> None:
        if self._in_row:
            self.rows[-1] += data


def _parse(page: str) -> _Table:
    t = _Table()
    t.feed(page)
    t.close()
    assert t.stack == []
    return t


def _docs() -> list[dict]:
    steroid = build_assessment(record_from_resources(fd.steroid_user(), today=TODAY))
    myeloma = build_assessment(record_from_resources(fd.myeloma_patient(), today=TODAY))
    return [steroid.to_json(), myeloma.to_json()]


def test_page_lists_assessments_red_flags_first_with_their_values() -> None:
    steroid, myeloma = _docs()
    table = _parse(render_dashboard([steroid, myeloma]))
    header, first, second = table.rows
    assert "Red flags" in header
    # the myeloma patient has red flags: first row, highlighted, with the action
    assert table.row_classes[1] == "flagged" and table.row_classes[2] is None
    assert "71 / male" in first and "myeloma" in first.lower()
    assert "consider MRI / oncology work-up" in first
    assert "68 / female" in second
    major, hip = steroid["risk"]["major_fracture_10y"], steroid["risk"]["hip_fracture_10y"]
    assert f"major {major:.1f}%" in second and f"hip {hip:.1f}%" in second
    assert "high risk" in second and "glucocorticoid" in second.lower()


def test_values_are_escaped() -> None:
    doc = _docs()[0]
    doc["risk_factors"].append({"code": "x", "label": "<script>alert(1)</script>",
                                "source": "fhir", "detail": None})
    page = render_dashboard([doc])
    assert "<script>" not in page and "&lt;script&gt;" in page
    _parse(page)


def test_cli_assess_html_and_dashboard(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = []
    for name, resources in (("steroid", fd.steroid_user()), ("myeloma", fd.myeloma_patient())):
        bundle = tmp_path / f"{name}.bundle.json"
        bundle.write_text(json.dumps(fd.bundle(resources)), encoding="utf-8")
        out = tmp_path / f"{name}.json"
        page = tmp_path / f"{name}.html"
        assert main(["assess", "--fhir", str(bundle), "--json", str(out),
                     "--html", str(page)]) == 0
        assert len(_parse(page.read_text(encoding="utf-8")).rows) == 2  # header + patient
        files.append(out)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json", encoding="utf-8")
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"status": "analysed"}), encoding="utf-8")
    html = tmp_path / "site" / "dashboard.html"
    assert main(["dashboard", *map(str, [*files, broken, other]), "--html", str(html)]) == 0
    err = capsys.readouterr().err
    assert "broken.json: not readable JSON" in err and "other.json: not an osteo-node" in err
    rows = _parse(html.read_text(encoding="utf-8")).rows
    assert len(rows) == 3 and "male" in rows[1]
    assert main(["dashboard", str(broken), "--html", str(tmp_path / "x.html")]) == 2


def test_clinrisk_disclaimer_beside_every_qfracture_risk_and_the_category_caveat() -> None:
    """The summary and the dashboard row show ClinRisk's disclaimer with the QFracture risk
    (their licence term); a row without a computed risk does not; the page states that the
    categories are CAROC / NOF cut-offs applied to QFracture."""
    steroid, myeloma = _docs()
    disclaimer = steroid["risk"]["disclaimer"]
    assert disclaimer and "wrong patients being given the wrong treatment" in disclaimer
    assert f"ClinRisk Ltd. disclaimer for QFracture-2012: {disclaimer}" in steroid["summary"]
    assert myeloma["risk"]["disclaimer"] == disclaimer  # every computed risk carries it
    no_bmi = build_assessment(record_from_resources(
        [fd.patient("p", "male", "1950-01-01")], today=TODAY)).to_json()
    assert no_bmi["risk"]["major_fracture_10y"] is None and no_bmi["risk"]["disclaimer"] is None
    assert "ClinRisk" not in no_bmi["summary"]
    page = render_dashboard([steroid, no_bmi])
    table = _parse(page)
    row = next(r for r in table.rows if "68 / female" in r)
    risk_cell = row[row.index("QFracture-2012: major"):row.index("glucocorticoid")]
    assert f"ClinRisk Ltd. disclaimer: {disclaimer}" in risk_cell
    other = next(r for r in table.rows if " / male" in r)
    assert "ClinRisk Ltd. disclaimer" not in other
    assert "CAROC" in page and "applied to QFracture-2012" in page
