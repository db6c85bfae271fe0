"""codes.yaml: every standard code exists in DICOM's code dictionary with the same meaning;
private codes use the declared 99-scheme and are each documented as "no standard concept
found" in dicom_sr_templates/README.md; concepts with a standard code stay standard; every
level / grade / morphology / height position has a code."""

from __future__ import annotations

import typing

import pytest
from pydicom.sr._concepts_dict import concepts

from osteo_node.exporters import codes
from osteo_node.pipeline.results import LEVELS, Morphology

#: concepts that have a verified standard code (dicom_sr_templates/README.md, "Codes: standard
#: or private"): a change back to the private scheme fails here
STANDARD = {
    ("concepts", "height"): ("DCM", "121207", "Height"),
    ("height_positions", "anterior"): ("SCT", "255549009", "Anterior"),
    ("height_positions", "middle"): ("NCIt", "C25569", "Middle"),
    ("height_positions", "posterior"): ("SCT", "255551008", "Posterior"),
    ("concepts", "attenuation"): ("DCM", "112031", "Attenuation Coefficient"),
    ("concepts", "contrast_phase"): ("DCM", "109058", "Contrast Phase"),
    ("concepts", "finding_type_vertebra"): ("SCT", "51282000", "Vertebra"),
    ("morphologies", "wedge"): ("SCT", "20446002", "Wedge-shaped"),
    ("morphologies", "normal"): ("SCT", "17621005", "Normal"),
    ("morphologies", "indeterminate"): ("SCT", "82334004", "Indeterminate"),
    ("contrast_phases", "delayed"): ("RADLEX", "RID11081", "Delayed phase"),
}


def _dicom_meanings(scheme: str, value: str) -> set[str]:
    return {m for d in concepts.get(scheme, {}).values() if value in d for m in [d[value][0]]}


def test_standard_codes_match_dicom_dictionary() -> None:
    book = codes.load()
    checked = 0
    for section, key, entry in book.all_entries():
        if entry.scheme == book.private_scheme.designator or entry.checked == "external":
            continue
        meanings = _dicom_meanings(entry.scheme, entry.value)
        assert meanings, f"{section}.{key}: ({entry.value}, {entry.scheme}) not in DICOM"
        assert entry.meaning in meanings, f"{section}.{key}: {entry.meaning!r} vs {meanings}"
        checked += 1
    assert checked > 30


def test_standard_concepts_stay_standard() -> None:
    book = codes.load()
    for (section, key), (scheme, value, meaning) in STANDARD.items():
        e = book.get(section, key)
        assert (e.scheme, e.value, e.meaning) == (scheme, value, meaning), (section, key)
        assert meaning in _dicom_meanings(scheme, value), (section, key)
    # the private height codes this replaced are gone
    for key in ("anterior_height", "middle_height", "posterior_height"):
        assert key not in book.sections["concepts"]


def test_every_private_code_is_documented_as_without_standard_concept() -> None:
    """Each 99OSTEO code has a row in the README's code table saying what was searched."""
    book = codes.load()
    readme = (codes.templates_dir() / "README.md").read_text(encoding="utf-8")
    rows = [ln for ln in readme.splitlines()
            if ln.startswith("|") and "no standard concept found" in ln]
    private = [(s, k, e) for s, k, e in book.all_entries()
               if e.scheme == book.private_scheme.designator]
    assert private  # the SR still needs the private scheme (height loss, Genant grade...)
    for section, key, entry in private:
        assert any(f"{entry.value}, 99OSTEO" in row for row in rows), (section, key)


def test_only_known_schemes_and_comments() -> None:
    book = codes.load()
    allowed = {"SCT", "DCM", "UCUM", "UMLS", "NCIt", "RADLEX", book.private_scheme.designator}
    for section, key, entry in book.all_entries():
        assert entry.scheme in allowed, (section, key)
        assert entry.comment.strip(), (section, key)
        assert len(entry.value) <= 16 and len(entry.meaning) <= 64, (section, key)


def test_every_value_the_result_can_hold_has_a_code() -> None:
    book = codes.load()
    for level in LEVELS:
        assert book.vertebra(level).scheme_designator == "SCT"
    for grade in range(4):
        book.get("genant_grades", grade)
    for morph in typing.get_args(Morphology):
        book.get("morphologies", morph)
    for phase in ("native", "arterial", "portal_venous", "delayed", "unknown"):
        book.get("contrast_phases", phase)
    for position in ("anterior", "middle", "posterior"):
        assert book.height_position(position).scheme_designator in ("SCT", "NCIt")


def test_vertebra_codes_are_distinct_and_reversible() -> None:
    book = codes.load()
    values = [book.get("vertebrae", lv).value for lv in LEVELS]
    assert len(set(values)) == len(values)
    for level in LEVELS:
        e = book.get("vertebrae", level)
        assert book.reverse("vertebrae", e.scheme, e.value) == level


def test_bad_yaml_is_refused() -> None:
    with pytest.raises(ValueError, match="private"):
        codes.parse({"private_scheme": {"designator": "OSTEO", "name": "x",
                                        "responsible_organization": "y", "version": "1"}})
    good = {"designator": "99X", "name": "x", "responsible_organization": "y", "version": "1"}
    with pytest.raises(ValueError, match="missing"):
        codes.parse({"private_scheme": good, **{s: {} for s in codes.SECTIONS},
                     "concepts": {"a": {"scheme": "DCM", "value": "1"}}})
