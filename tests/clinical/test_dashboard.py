"""``osteo-node dashboard`` / ``assess --html``: the static export of patient assessments, made
with the web application's own study-page template (the same object the SR and worklist use)."""

from __future__ import annotations

import json
from datetime import date
from html.parser import HTMLParser
from pathlib import Path

import pytest

from osteo_node.cli.main import main
from osteo_node.clinical.assessment import build_assessment
from osteo_node.clinical.fhir_intake import record_from_resources
from osteo_node.web.assessment_export import render_assessments
from tests.clinical import fhir_data as fd

TODAY = date(2026, 11, 22)
CLINRISK = "wrong patients being given the wrong treatment"  # from ClinRisk's disclaimer


class _Page(HTMLParser):
    """Collects the text of each patient section and checks every opened tag is closed."""

    VOID = frozenset({"br", "meta", "link", "img", "input"})

    def __init__(self) -> None:
        super().__init__()
        self.patients: list[str] = []
        self.classes: list[str] = []
        self.stack: list[str] = []
        self._depth: int | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "script":
            raise AssertionError("the page must not contain script")
        if tag in ("link", "img") or any(k in ("src", "href") for k, _ in attrs):
            raise AssertionError(f"the export must be self-contained: <{tag} {attrs}>")
        if tag in self.VOID:
            return
        self.stack.append(tag)
        cls = dict(attrs).get("class") or ""
        if tag == "section" and "patient" in cls.split():
            self.patients.append("")
            self.classes.append(cls)
            self._depth = len(self.stack)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, (tag, self.stack)
        if self._depth == len(self.stack):
            self._depth = None
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        if self._depth is not None:
            self.patients[-1] += data


def _parse(page: str) -> _Page:
    p = _Page()
    p.feed(page)
    p.close()
    assert p.stack == []
    return p


def _docs() -> list[dict]:
    steroid = build_assessment(record_from_resources(fd.steroid_user(), today=TODAY))
    myeloma = build_assessment(record_from_resources(fd.myeloma_patient(), today=TODAY))
    return [steroid.to_json(), myeloma.to_json()]


def test_page_lists_assessments_red_flags_first_with_their_values() -> None:
    steroid, myeloma = _docs()
    page = _parse(render_assessments([steroid, myeloma]))
    first, second = page.patients
    # the myeloma patient has red flags: first, highlighted, with the action
    assert "flagged" in page.classes[0] and "flagged" not in page.classes[1]
    assert "71 / male" in first and "myeloma" in first.lower()
    assert "consider MRI / oncology work-up" in first
    assert "68 / female" in second
    major, hip = steroid["risk"]["major_fracture_10y"], steroid["risk"]["hip_fracture_10y"]
    assert f"major osteoporotic fracture {major:.1f} %" in second
    assert f"hip fracture {hip:.1f} %" in second
    assert "high risk" in second and "glucocorticoid" in second.lower()
    assert "no DXA results" in second and "no imaging analysis" in second


def test_values_are_escaped() -> None:
    doc = _docs()[0]
    doc["risk_factors"].append({"code": "x", "label": "<script>alert(1)</script>",
                                "source": "fhir", "detail": None})
    page = render_assessments([doc])
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
        assert len(_parse(page.read_text(encoding="utf-8")).patients) == 1
        files.append(out)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json", encoding="utf-8")
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"status": "analysed"}), encoding="utf-8")
    html = tmp_path / "site" / "dashboard.html"
    assert main(["dashboard", *map(str, [*files, broken, other]), "--html", str(html)]) == 0
    err = capsys.readouterr().err
    assert "broken.json: not readable JSON" in err and "other.json: not an osteo-node" in err
    patients = _parse(html.read_text(encoding="utf-8")).patients
    assert len(patients) == 2 and " / male" in patients[0]
    assert main(["dashboard", str(broken), "--html", str(tmp_path / "x.html")]) == 2


def test_clinrisk_disclaimer_once_per_page_and_the_category_caveat() -> None:
    """ClinRisk's disclaimer (their licence term for QFracture risks) is on every page that
    shows a QFracture risk, once however many risks it shows, and not on a page without one;
    the page states that the categories are CAROC / NOF cut-offs applied to QFracture."""
    steroid, myeloma = _docs()
    disclaimer = steroid["risk"]["disclaimer"]
    assert disclaimer and CLINRISK in disclaimer
    assert f"ClinRisk Ltd. disclaimer for QFracture-2012: {disclaimer}" in steroid["summary"]
    assert myeloma["risk"]["disclaimer"] == disclaimer  # every computed risk carries it
    no_bmi = build_assessment(record_from_resources(
        [fd.patient("p", "male", "1950-01-01")], today=TODAY)).to_json()
    assert no_bmi["risk"]["major_fracture_10y"] is None and no_bmi["risk"]["disclaimer"] is None
    assert "ClinRisk" not in no_bmi["summary"]
    page = render_assessments([steroid, myeloma, no_bmi])
    assert page.count(CLINRISK) == 1 and page.count("Decision support") == 1
    assert "CAROC" in page and "applied to QFracture-2012" in page
    parsed = _parse(page)
    alone = next(p for p in parsed.patients if "/ male" in p and "myeloma" not in p.lower())
    assert "not computed" in alone and "missing: bmi" in alone and "low risk" not in alone
    assert CLINRISK not in render_assessments([no_bmi])
