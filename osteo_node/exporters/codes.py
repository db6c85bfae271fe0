"""Coded concepts for the DICOM exporters, read from ``dicom_sr_templates/codes.yaml``.

No code value is written in Python: every concept comes from the YAML (scheme, value, meaning,
comment with its source). :class:`CodeBook` gives typed access and builds highdicom
``CodedConcept`` objects; the private scheme is described for the SR's Coding Scheme
Identification Sequence.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from highdicom.sr import CodedConcept
from pydicom.dataset import Dataset

from osteo_node.pipeline.results import relative_index
from osteo_node.resources import resource_path

ENV_DIR = "OSTEO_SR_TEMPLATES"
SECTIONS = ("vertebrae", "concepts", "units", "height_positions", "genant_grades",
            "morphologies", "yes_no", "contrast_phases")


@dataclass(frozen=True)
class CodeEntry:
    scheme: str
    value: str
    meaning: str
    comment: str
    checked: str = "dicom"  # "dicom": in DICOM's code dictionary; "external": cited elsewhere

    def concept(self) -> CodedConcept:
        return CodedConcept(value=self.value, scheme_designator=self.scheme, meaning=self.meaning)

    def matches(self, scheme: str, value: str) -> bool:
        return self.scheme == scheme and self.value == value


@dataclass(frozen=True)
class PrivateScheme:
    designator: str
    name: str
    responsible_organization: str
    version: str

    def identification_item(self) -> Dataset:
        """One item of CodingSchemeIdentificationSequence (0008,0110)."""
        item = Dataset()
        item.CodingSchemeDesignator = self.designator
        item.CodingSchemeName = self.name
        item.CodingSchemeResponsibleOrganization = self.responsible_organization
        item.CodingSchemeVersion = self.version
        return item


def _entry(section: str, key: str, raw: Any) -> CodeEntry:
    if not isinstance(raw, dict):
        raise ValueError(f"codes.yaml {section}.{key}: expected a mapping, got {raw!r}")
    missing = {"scheme", "value", "meaning", "comment"} - set(raw)
    if missing:
        raise ValueError(f"codes.yaml {section}.{key}: missing {sorted(missing)}")
    checked = str(raw.get("checked", "dicom"))
    if checked not in ("dicom", "external"):
        raise ValueError(f"codes.yaml {section}.{key}: checked must be dicom or external")
    return CodeEntry(scheme=str(raw["scheme"]), value=str(raw["value"]),
                     meaning=str(raw["meaning"]), comment=str(raw["comment"]), checked=checked)


@dataclass(frozen=True)
class CodeBook:
    private_scheme: PrivateScheme
    sections: dict[str, dict[str, CodeEntry]]

    def get(self, section: str, key: str | int) -> CodeEntry:
        try:
            return self.sections[section][str(key)]
        except KeyError:
            raise KeyError(f"no code for {key!r} in section {section!r} of codes.yaml") from None

    def concept(self, key: str) -> CodedConcept:
        return self.get("concepts", key).concept()

    def unit(self, key: str) -> CodedConcept:
        return self.get("units", key).concept()

    def height_position(self, name: str) -> CodedConcept:
        """Topographical modifier saying which vertebral body height (anterior / middle /
        posterior) a (121207, DCM, "Height") measurement is."""
        return self.get("height_positions", name).concept()

    def vertebra(self, level: str) -> CodedConcept:
        """SNOMED CT code of a level; the generic "Vertebra" for a relative label (V1..Vn)."""
        if relative_index(level) is not None:
            return self.concept("finding_type_vertebra")
        return self.get("vertebrae", level).concept()

    def reverse(self, section: str, scheme: str, value: str) -> str:
        """Key of the entry with this scheme/value in a section (for parsing objects back)."""
        for key, entry in self.sections[section].items():
            if entry.matches(scheme, value):
                return key
        raise KeyError(f"code ({value}, {scheme}) not in section {section!r}")

    def all_entries(self) -> list[tuple[str, str, CodeEntry]]:
        return [(s, k, e) for s, d in self.sections.items() for k, e in d.items()]


def parse(data: dict[str, Any]) -> CodeBook:
    ps = data.get("private_scheme")
    if not isinstance(ps, dict):
        raise ValueError("codes.yaml: private_scheme block missing")
    scheme = PrivateScheme(designator=str(ps["designator"]), name=str(ps["name"]),
                           responsible_organization=str(ps["responsible_organization"]),
                           version=str(ps["version"]))
    if not scheme.designator.startswith("99"):
        raise ValueError("private coding scheme designators must start with '99' (PS3.3 8.2)")
    sections: dict[str, dict[str, CodeEntry]] = {}
    for section in SECTIONS:
        raw = data.get(section)
        if not isinstance(raw, dict):
            raise ValueError(f"codes.yaml: section {section!r} missing")
        sections[section] = {str(k): _entry(section, str(k), v) for k, v in raw.items()}
    return CodeBook(private_scheme=scheme, sections=sections)


def templates_dir() -> Path:
    return resource_path("dicom_sr_templates", ENV_DIR)


@cache
def load(path: Path | None = None) -> CodeBook:
    """Load and validate ``codes.yaml`` (cached). ``path`` defaults to the templates folder."""
    file = path or templates_dir() / "codes.yaml"
    data = yaml.safe_load(file.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{file} must hold a mapping")
    return parse(data)
