"""codes.yaml: every standard code exists in DICOM's code dictionary with the same meaning;
private codes use the declared 99-scheme; every level / grade / morphology has a code."""

from __future__ import annotations

import typing

import pytest
from pydicom.sr._concepts_dict import concepts

from osteo_node.exporters import codes
from osteo_node.pipeline.results import LEVELS, Morphology


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


def test_only_known_schemes_and_comments() -> None:
    book = codes.load()
    allowed = {"SCT", "DCM", "UCUM", "UMLS", book.private_scheme.designator}
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
