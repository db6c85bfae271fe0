"""MR level names are judged by the CT rule (grade.level_uncertain) on the same confidence scale.

- mr/levels.py: the L5 anchor (lowest body above the unsegmented sacrum) starts at the CT
  sacrum-anchor confidence and loses 0.03 per level; relative labels V1..Vn get 0.0. With the
  threshold of clinical_data/ct_screening.yaml, names L5 up to T11 (7 bodies) stay certain,
  names counted further are uncertain, relative labels always are. Checked on canonical instance
  maps (a fake for the segmentation, which this is not about) through ``assign_levels``.
- The REAL MR analyser on REAL held-out MRI: vb2_09 (manual masks T11-L5; the analyser names
  them from the L5 anchor, all certain, plus the body cut by the top of the field of view, T10,
  uncertain) and vb3_25 as a sagittal DICOM series cut inside L2 and L5 (no anchor: V1..Vn, all
  uncertain, notes and warning); the SEG and SR it exports carry it ("V1?", LVLUNC).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from osteo_node.exporters.publish import build_objects
from osteo_node.exporters.sr import read_report
from osteo_node.pipeline.ct import level_names as ct_levels
from osteo_node.pipeline.mr.analyser import MRAnalyser
from osteo_node.pipeline.mr.levels import LevelParams, assign_levels
from osteo_node.pipeline.results import AnalysisOutput
from osteo_node.pipeline.stages.grade import GradingRules, level_uncertain
from tests.pipeline.mr.dicom_series import sagittal_case, write_series

RULES = GradingRules.default()


def _column(n: int, margin_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Canonical [LR, SI, AP] instance map: n bodies of 25 rows, 5-row discs, margin below."""
    rows = 5 + n * 30 + margin_rows
    labels = np.zeros((9, rows, 30), dtype=np.int32)
    for b in range(n):
        top = 5 + b * 30
        labels[2:7, top:top + 25, 5:25] = b + 1
    return labels, labels > 0


def _assigned(n: int, margin_rows: int = 40) -> list[tuple[str, bool]]:
    labels, body = _column(n, margin_rows)
    a = assign_levels(labels, body, sp_si=1.0)
    return [(name, level_uncertain(c, RULES)) for name, c in zip(a.names, a.confidence,
                                                                 strict=True)]


def test_mr_confidences_are_on_the_ct_scale() -> None:
    assert LevelParams().anchored_confidence == ct_levels.CONF_SACRUM_ONLY
    # anchored: L5 up to T11 certain (7 bodies: the vb2 cases), T10 counted further: uncertain
    assert _assigned(7) == [(lv, False) for lv in ("T11", "T12", "L1", "L2", "L3", "L4", "L5")]
    assert _assigned(8)[0] == ("T10", True)
    assert not any(u for _, u in _assigned(8)[1:])
    # lumbosacral junction not in view (field of view ends 5 mm below the lowest body)
    relative = _assigned(5, margin_rows=5)
    assert [n for n, _ in relative] == ["V1", "V2", "V3", "V4", "V5"]
    assert all(u for _, u in relative)


@pytest.fixture(scope="module")
def analyser() -> MRAnalyser:
    return MRAnalyser()


@pytest.mark.shared_data
def test_anchored_mr_names_certain_up_to_t11(shared_data: Path, analyser: MRAnalyser) -> None:
    out = analyser.analyse([shared_data / "mr" / "vertebral_bodies" / "vb2_09_image.nii.gz"])
    r = out.result
    assert r.status == "analysed", r.reason
    assert [(v.level, v.level_uncertain) for v in r.vertebrae] == [("T10", True)] + [
        (lv, False) for lv in ("T11", "T12", "L1", "L2", "L3", "L4", "L5")]
    assert r.findings is not None and r.findings.density_level_uncertain is None
    t10, *certain = r.vertebrae
    assert t10.level_confidence < RULES.min_level_confidence <= certain[0].level_confidence
    assert any(n.startswith("level uncertain (level confidence 0.59 < 0.6)") for n in t10.notes)
    assert not [n for v in certain for n in v.notes if "uncertain" in n]
    assert [w for w in r.warnings if "level uncertain" in w] == [
        "level uncertain: T10 (level confidence < 0.6; see the labelling notes): names may be "
        "off by one or more levels"]


@pytest.mark.shared_data
def test_relative_mr_labels_are_uncertain_everywhere(
    shared_data: Path, analyser: MRAnalyser, tmp_path: Path
) -> None:
    vb = shared_data / "mr" / "vertebral_bodies"
    case = sagittal_case(vb / "vb3_25_image.nii.gz", vb / "vb3_25_label.nii.gz", slab=4)
    rows_l2 = np.flatnonzero((case.labels == 2).any(axis=(0, 2)))
    rows_l5 = np.flatnonzero((case.labels == 5).any(axis=(0, 2)))
    top, bottom = int(rows_l2[len(rows_l2) // 2]), int(rows_l5[len(rows_l5) // 2])
    cut = dataclasses.replace(
        case,
        image=np.ascontiguousarray(case.image[:, top:bottom]),
        labels=np.ascontiguousarray(case.labels[:, top:bottom]),
        first_pixel_lps=case.first_pixel_lps + np.array([0.0, 0.0, -case.pixel_mm[0] * top]),
    )
    write_series(cut, tmp_path / "series")
    out = analyser.analyse([tmp_path / "series"])
    r = out.result
    assert r.status == "analysed", r.reason
    names = [v.level for v in r.vertebrae]
    assert names[0] == "V1" and all(n.startswith("V") for n in names), names
    for v in r.vertebrae:
        assert v.level_confidence == 0.0 and v.level_uncertain is True, v
        assert any(n.startswith("level uncertain (level confidence 0 < 0.6)") for n in v.notes)
    assert f"level uncertain: {', '.join(names)} (level confidence < 0.6" in " ".join(r.warnings)
    assert r.findings is not None and r.findings.density_level_uncertain is None
    _check_exports(out, names)


def _check_exports(out: AnalysisOutput, names: list[str]) -> None:
    objects = {o.kind: o.dataset for o in build_objects(out, uid_root=None, job_key="mr-rel")}
    labels = {str(s.TrackingID): str(s.SegmentLabel) for s in objects["seg"].SegmentSequence}
    assert labels == {n: f"{n}?" for n in names}
    report = read_report(objects["sr"])
    assert {k: p.level_uncertain for k, p in report.vertebrae.items()} == dict.fromkeys(
        names, True)
