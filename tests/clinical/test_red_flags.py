"""Pathological-fracture red flags: real CT vertebrae (with and without an inserted lytic
lesion), analysis-JSON imaging signs, and clinical data."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from osteo_node.clinical.assessment import build_assessment
from osteo_node.clinical.fhir_intake import record_from_resources
from osteo_node.clinical.red_flags import body_texture, imaging_flags, texture_flags
from tests.clinical import fhir_data as fd

L1_VERSE = 20  # vertebrae_pp_refined.nii.gz numbering: 19 T12, 20 L1, ... 24 L5
LEVEL_NAMES = {19: "T12", 20: "L1", 21: "L2", 22: "L3", 23: "L4", 24: "L5"}


@pytest.fixture(scope="module")
def example_ct(shared_data: Path):
    d = shared_data / "ct" / "totalseg_example"
    img = sitk.ReadImage(str(d / "example_ct.nii.gz"))  # SimpleITK gives LPS geometry
    ct = sitk.GetArrayFromImage(img).astype(np.float32)
    vert = sitk.GetArrayFromImage(sitk.ReadImage(str(d / "vertebrae_pp_refined.nii.gz")))
    body = sitk.GetArrayFromImage(sitk.ReadImage(str(d / "vertebrae_body.nii.gz")))
    assert vert.shape == ct.shape == body.shape
    return img, ct, vert, body


def _insert_lytic_sphere(img, ct, mask, radius_mm: float, lesion_hu: float):
    """Lower the HU in a sphere at the body's centroid so its median becomes ``lesion_hu``
    (the texture inside the sphere is kept, only shifted), like a lytic metastasis replacing
    trabecular bone by soft tissue."""
    idx = np.argwhere(mask)
    centre_kji = idx.mean(axis=0)
    centre_lps = np.array(img.TransformContinuousIndexToPhysicalPoint(centre_kji[::-1].tolist()))
    k, j, i = np.indices(ct.shape)
    ijk = np.stack([i.ravel(), j.ravel(), k.ravel()], axis=1).astype(np.float64)
    direction = np.array(img.GetDirection()).reshape(3, 3)
    lps = np.array(img.GetOrigin()) + (ijk * np.array(img.GetSpacing())) @ direction.T
    dist = np.linalg.norm(lps - centre_lps, axis=1).reshape(ct.shape)
    sphere = (dist <= radius_mm) & mask
    shift = float(np.median(ct[sphere])) - lesion_hu
    out = ct.copy()
    out[sphere] -= shift
    return out, int(sphere.sum())


@pytest.mark.shared_data
def test_lytic_lesion_in_real_l1_is_flagged_and_untouched_vertebrae_are_not(example_ct):
    img, ct, vert, body = example_ct
    spacing = img.GetSpacing()
    l1 = (vert == L1_VERSE) & (body == 1)
    # Untouched: every lumbar body and T12 of this real CT is free of focal flags.
    for label, name in LEVEL_NAMES.items():
        tex = body_texture(ct, (vert == label) & (body == 1), spacing)
        assert tex is not None, name
        assert texture_flags(name, tex) == [], (name, tex)
    lesioned, voxels = _insert_lytic_sphere(img, ct, l1, radius_mm=9.0, lesion_hu=20.0)
    assert voxels > 50
    tex = body_texture(lesioned, l1, spacing)
    assert tex is not None and tex.focal_lytic
    assert tex.lytic_cluster_mm3 >= 1000
    flags = texture_flags("L1", tex)
    assert [f.code for f in flags] == ["focal_lytic_area"]
    assert "L1" in flags[0].reason
    # The untouched neighbours in the same (modified) volume stay clean.
    for label in (19, 21):
        other = body_texture(lesioned, (vert == label) & (body == 1), spacing)
        assert other is not None and not other.focal_lytic


@pytest.mark.shared_data
def test_sclerotic_focus_in_real_l2_is_flagged(example_ct):
    img, ct, vert, body = example_ct
    l2 = (vert == 21) & (body == 1)
    raised, _ = _insert_lytic_sphere(img, ct, l2, radius_mm=9.0, lesion_hu=700.0)
    tex = body_texture(raised, l2, img.GetSpacing())
    assert tex is not None and tex.focal_sclerotic and not tex.focal_lytic


def _analysis(vertebrae: list[dict], vcf: list[str]) -> dict:
    return {"status": "analysed", "reason": None, "modality": "CT",
            "study_instance_uid": "1.2.3", "series_instance_uid": "1.2.3.4",
            "vertebrae": vertebrae,
            "findings": {"osteoporosis_suspected": True, "l1_hu": 92.0, "vcf_levels": vcf,
                         "max_genant_grade": 2}}


def test_fracture_above_t7_and_reported_signs():
    verts = [
        {"level": "T5", "genant_grade": 2, "morphology": "wedge"},
        {"level": "T12", "genant_grade": 1, "morphology": "wedge",
         "posterior_wall_convex": True},
        {"level": "L1", "genant_grade": 0, "pedicle_involved": True,
         "texture": {"reference_hu": 100.0, "spread_hu": 70.0, "lytic_cluster_mm3": 900.0,
                     "sclerotic_cluster_mm3": 0.0, "voxels": 700, "focal_lytic": True,
                     "focal_sclerotic": False, "heterogeneous": True}},
    ]
    flags = imaging_flags(_analysis(verts, ["T5", "T12"]))
    codes = {(f.code, f.level) for f in flags}
    assert ("fracture_above_t7", "T5") in codes
    assert ("fracture_above_t7", "T12") not in codes
    assert ("posterior_wall_convexity", "T12") in codes
    assert ("pedicle_involvement", "L1") in codes
    assert ("focal_lytic_area", "L1") in codes and ("heterogeneous_hu", "L1") in codes
    plain = imaging_flags(_analysis([{"level": "L1", "genant_grade": 2}], ["L1"]))
    assert plain == []


def test_clinical_red_flags_cancer_alp_anaemia():
    pid = "c"
    rec = record_from_resources([
        fd.patient(pid, "female", "1950-01-01"),
        fd.condition("bc", pid, fd.SNOMED, "254837009", "Malignant neoplasm of breast"),
        fd.quantity_obs("alp", pid, "6768-6", "ALP", 180, "U/L"),  # no ref range: 130 fallback
        fd.quantity_obs("hb", pid, "718-7", "Hb", 10.8, "g/dL"),
    ], today=date(2026, 11, 22))
    a = build_assessment(rec, analysis=_analysis([{"level": "T4", "genant_grade": 2}], ["T4"]))
    codes = {f.code for f in a.red_flags}
    assert {"cancer_history", "high_alp", "fracture_above_t7"} <= codes
    assert "unexplained_anaemia" not in codes  # the cancer is a recorded explanation
    assert a.pathological_fracture_suspected
    assert "consider MRI / oncology work-up" in a.summary()
    rec2 = record_from_resources([
        fd.patient("d", "male", "1950-01-01"),
        fd.quantity_obs("hb", "d", "718-7", "Hb", 112, "g/L"),
        fd.quantity_obs("alp", "d", "6768-6", "ALP", 120, "U/L", ref_high=104),
    ], today=date(2026, 11, 22))
    codes2 = {f.code for f in build_assessment(rec2).red_flags}
    assert codes2 == {"unexplained_anaemia", "high_alp"}  # lab's own ULN (104) used


@pytest.mark.shared_data
def test_tptbox_l3_at_1_5_mm_untouched_clean_and_lytic_flagged(shared_data: Path):
    """Second real CT at another resolution (TPTBox crop, 1.5 mm, low-density L3 with the
    dataset's own trabecular-body subregion mask)."""
    d = shared_data / "ct" / "tptbox_sample"
    img = sitk.ReadImage(str(d / "sub-ct_label-22_ct.nii.gz"))
    ct = sitk.GetArrayFromImage(img).astype(np.float32)
    vert = sitk.GetArrayFromImage(sitk.ReadImage(str(d / "sub-ct_seg-vert_label-22_msk.nii.gz")))
    sub = sitk.GetArrayFromImage(
        sitk.ReadImage(str(d / "sub-ct_seg-subreg_label-22_msk.nii.gz")))
    for label, name in ((21, "L2"), (22, "L3"), (23, "L4")):
        body = (vert == label) & np.isin(sub, [49, 50])  # corpus border + trabecular corpus
        tex = body_texture(ct, body, img.GetSpacing())
        assert tex is not None and texture_flags(name, tex) == [], (name, tex)
    l3 = (vert == 22) & np.isin(sub, [49, 50])
    lesioned, _ = _insert_lytic_sphere(img, ct, l3, radius_mm=9.0, lesion_hu=0.0)
    tex = body_texture(lesioned, l3, img.GetSpacing())
    assert tex is not None
    assert [f.code for f in texture_flags("L3", tex)] == ["focal_lytic_area"]
