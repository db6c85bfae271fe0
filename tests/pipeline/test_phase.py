"""Contrast phase from real headers and real images."""

from __future__ import annotations

import copy
from pathlib import Path

import pydicom
import pytest

from osteo_node.pipeline.ct.evaluation import reference_label_volume
from osteo_node.pipeline.ct.phase import PhaseRules, detect_phase, phase_from_header
from osteo_node.pipeline.stages.measure import centroid_mm
from osteo_node.pipeline.stages.volume import load_dicom_series, load_nifti
from tests.pipeline.ct_fixtures import CHEST, J2K

TS = "ct/totalseg_example"


@pytest.fixture(scope="module")
def rules() -> PhaseRules:
    return PhaseRules.default()


def test_header_timing(shared_data: Path, rules: PhaseRules) -> None:
    ds = pydicom.dcmread(sorted((shared_data / J2K).iterdir())[0], stop_before_pixels=True)
    p = phase_from_header(ds, rules)
    assert p is not None and p.phase == "portal_venous" and p.contrast_given
    assert "scan 96 s after bolus start" in p.evidence[1]
    early = copy.deepcopy(ds)
    early.ContrastBolusStartTime = "140330"
    assert phase_from_header(early, rules).phase == "arterial"  # type: ignore[union-attr]
    none = copy.deepcopy(ds)
    none.ContrastBolusAgent = "NONE"
    assert phase_from_header(none, rules).phase == "native"  # type: ignore[union-attr]
    chest = pydicom.dcmread(sorted((shared_data / CHEST).iterdir())[0], stop_before_pixels=True)
    assert phase_from_header(chest, rules) is None  # the header says nothing


def test_image_evidence_on_real_scans(shared_data: Path, rules: PhaseRules) -> None:
    vol = load_dicom_series(shared_data / J2K).volume
    labels = reference_label_volume(shared_data / TS / "dicom_seg_reference.nii.gz", "totalseg",
                                    vol.geometry, vol.array.shape)
    cents = [centroid_mm(labels.mask(lv), vol.geometry) for lv in labels.levels]
    header = copy.deepcopy(vol.header)
    del header.ContrastBolusAgent
    p = detect_phase(header, vol.array, vol.geometry, labels.array, cents, rules=rules)
    assert p.phase == "portal_venous" and p.source == "image"  # aorta ~155 HU
    # the unenhanced example CT (TotalSegmentator contrast_phase.json: native)
    nat = load_nifti(shared_data / TS / "example_ct.nii.gz").volume
    lab = reference_label_volume(shared_data / TS / "vertebrae_pp_refined.nii.gz", "verse",
                                 nat.geometry, nat.array.shape)
    cents = [centroid_mm(lab.mask(lv), nat.geometry) for lv in lab.levels]
    p = detect_phase(None, nat.array, nat.geometry, lab.array, cents, rules=rules)
    assert p.phase == "native" and p.contrast_given is False
    assert detect_phase(None, None, None, None, [], rules=rules).phase == "unknown"
