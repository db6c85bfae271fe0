"""CT analyser end to end on real data with an injected segmentation (the reference labels).

These tests are about selection, loading, measurement, grading, phase and refusals; the
segmentation model has its own tests. Bad inputs are real series with edited headers.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest

from osteo_node.pipeline.ct.analyser import CTAnalyser, Segmentation
from osteo_node.pipeline.ct.evaluation import (
    ReferenceSpec,
    centroid_lps,
    reference_label_volume,
    reference_segment_fn,
)
from osteo_node.pipeline.registry import analyser_for
from osteo_node.pipeline.stages.measure import eroded_mean_hu
from osteo_node.pipeline.types import LabelVolume, Volume
from tests.pipeline.ct_fixtures import CHEST, J2K, link_series, rewrite, segment_must_not_run

TS = "ct/totalseg_example"
SCHEMA_KEYS = {"status", "reason", "modality", "study_instance_uid", "series_instance_uid",
               "contrast_phase", "model", "vertebrae", "findings", "timings_s"}
VERTEBRA_KEYS = {"level", "level_confidence", "centroid_mm", "trabecular_hu", "heights_mm",
                 "height_loss", "morphology", "genant_grade"}


def example_spec(root: Path) -> ReferenceSpec:
    return ReferenceSpec(root / TS / "vertebrae_pp_refined.nii.gz", "verse",
                         root / TS / "vertebrae_body.nii.gz", (1,))


def j2k_spec(root: Path) -> ReferenceSpec:
    return ReferenceSpec(root / TS / "dicom_seg_reference.nii.gz", "totalseg")


def test_example_ct_nifti_with_reference_labels(shared_data: Path) -> None:
    stages: list[str] = []
    analyser = CTAnalyser(segment=reference_segment_fn(example_spec(shared_data)),
                          progress=lambda s, m: stages.append(s))
    out = analyser.analyse([shared_data / TS / "example_ct.nii.gz"])
    r = out.result
    assert r.status == "analysed", r.reason
    assert stages == ["volume", "segment", "measure", "phase", "grade", "done"]
    d = json.loads(json.dumps(r.to_json()))
    assert set(d) >= SCHEMA_KEYS and set(d["findings"]) >= {
        "osteoporosis_suspected", "l1_hu", "vcf_levels", "max_genant_grade"}
    assert set(d["model"]) == {"name", "version", "sha256", "execution_provider"}
    assert [v["level"] for v in d["vertebrae"]] == ["T12", "L1", "L2", "L3", "L4", "L5"]
    for v in d["vertebrae"]:
        assert set(v) >= VERTEBRA_KEYS
    assert d["label_map"] == {"T12": 19, "L1": 20, "L2": 21, "L3": 22, "L4": 23, "L5": 24}
    assert d["contrast_phase"] == "native"  # TotalSegmentator's contrast_phase.json: native
    # L1 HU vs the eroded reference body mask (issue acceptance 1 measure: within 10 HU)
    assert out.volume is not None
    ref = reference_label_volume(example_spec(shared_data).vertebrae, "verse",
                                 out.volume.geometry, out.volume.array.shape)
    body = (ref.array == 20) & reference_body(shared_data, out.volume)
    ref_hu = eroded_mean_hu(out.volume.array, out.volume.geometry, body, 3.0)
    assert ref_hu is not None and r.findings is not None and r.findings.l1_hu is not None
    assert abs(r.findings.l1_hu - ref_hu) <= 10.0
    # centroids are LPS: compare with nibabel's RAS affine
    import nibabel as nib
    lab = nib.load(str(example_spec(shared_data).vertebrae))
    ijk = np.argwhere(np.asarray(lab.dataobj) == 20).mean(axis=0)
    ras = lab.affine @ np.r_[ijk, 1.0]
    l1 = next(v for v in d["vertebrae"] if v["level"] == "L1")
    np.testing.assert_allclose(l1["centroid_mm"], [-ras[0], -ras[1], ras[2]], atol=0.1)
    t12 = d["vertebrae"][0]
    assert t12["genant_grade"] is None and any("partial coverage: T12" in w for w in r.warnings)
    assert all(v["genant_grade"] == 0 for v in d["vertebrae"][2:])
    assert r.timings_s["total"] > 0 and "measure" in r.timings_s


def reference_body(root: Path, volume: Volume) -> np.ndarray:
    from osteo_node.pipeline.ct.evaluation import given_bodies

    b = given_bodies(example_spec(root), volume.geometry, volume.array.shape)
    assert b is not None
    return b


def test_jpeg2000_dicom_partial_series(shared_data: Path, tmp_path: Path) -> None:
    """The 20 real JPEG 2000 slices with their reference vertebra labels but no body masks:
    T11 and T12 are found, nothing can be measured on them, so the result is not_analysable
    and says why (issue 2 acceptance 4: a 20-slice partial series)."""
    link_series(shared_data / J2K, tmp_path / "in", names=lambda n, f: f"{n}")
    with_bodies = reference_segment_fn(j2k_spec(shared_data))

    def without_bodies(volume: Volume) -> Segmentation:
        seg = with_bodies(volume)
        return Segmentation(seg.labels, None, seg.model)

    out = CTAnalyser(segment=without_bodies).analyse([tmp_path / "in"])
    r = out.result
    assert r.status == "not_analysable"
    assert r.reason is not None
    assert "vertebrae found (T11, T12) but none could be measured" in r.reason
    assert "no vertebral body mask" in r.reason
    assert r.vertebrae == [] and r.findings is None


def test_jpeg2000_dicom_partial_series_with_bodies(shared_data: Path, tmp_path: Path) -> None:
    """The same slices with body masks (the reference vertebrae themselves): analysed, contrast
    phase from the header and the image, partial coverage reported, no density call."""
    import dataclasses

    link_series(shared_data / J2K, tmp_path / "in", names=lambda n, f: f"{n}")
    reference = reference_segment_fn(j2k_spec(shared_data))

    def with_bodies(volume: Volume) -> Segmentation:
        seg = reference(volume)
        return dataclasses.replace(seg, bodies=seg.labels.array > 0)

    r = CTAnalyser(segment=with_bodies).analyse([tmp_path / "in"]).result
    assert r.status == "analysed", r.reason
    assert {v.level for v in r.vertebrae} == {"T11", "T12"}
    assert r.contrast_phase == "portal_venous"  # ContrastBolusAgent APPLIED, 97 s after bolus
    assert any("levels not in view" in w for w in r.warnings)
    assert any("partial coverage" in w for w in r.warnings)
    assert r.findings is not None


def test_registry_gives_ct_analyser() -> None:
    a = analyser_for("ct")
    assert a is not None and a.name == "ct-vertebrae"


@pytest.fixture
def chest_copy(shared_data: Path, tmp_path: Path) -> list[Path]:
    return link_series(shared_data / CHEST, tmp_path / "chest", keep=lambda n: 40 <= n < 80)


def refuse(paths: list[Path]) -> str:
    r = CTAnalyser(segment=segment_must_not_run).analyse(paths).result
    assert r.status == "not_analysable" and r.reason
    assert r.to_json()["status"] == "not_analysable"
    return r.reason


def test_missing_rescale_tags(chest_copy: list[Path]) -> None:
    def drop(ds: pydicom.Dataset) -> None:
        del ds.RescaleIntercept, ds.RescaleSlope

    rewrite(chest_copy[7], drop)
    reason = refuse([chest_copy[0].parent])
    assert "RescaleSlope/RescaleIntercept missing on a CT slice" in reason


def test_duplicate_positions(chest_copy: list[Path]) -> None:
    def new_uid(ds: pydicom.Dataset) -> None:
        ds.SOPInstanceUID = pydicom.uid.generate_uid()

    rewrite(chest_copy[12], new_uid, dst=chest_copy[0].parent / "dup.dcm")
    assert "duplicate slice positions" in refuse([chest_copy[0].parent])


def test_too_short_series(shared_data: Path, tmp_path: Path) -> None:
    link_series(shared_data / CHEST, tmp_path / "s", keep=lambda n: n < 10)
    reason = refuse([tmp_path / "s"])
    assert "only 10 slice(s) (minimum 16)" in reason


def test_irregular_spacing(shared_data: Path, tmp_path: Path) -> None:
    link_series(shared_data / CHEST, tmp_path / "s", keep=lambda n: n < 60 and n != 30)
    reason = refuse([tmp_path / "s"])
    assert "irregular slice spacing" in reason


def test_not_ct_and_not_dicom(tmp_path: Path) -> None:
    from pydicom.data import get_testdata_file

    mr = Path(str(get_testdata_file("MR_small.dcm")))
    reason = refuse([mr])
    assert "modality MR" in reason
    (tmp_path / "notes.txt").write_text("not an image")
    assert refuse([tmp_path]) == "no DICOM instances found"
    assert refuse([]) == "no input files"


def test_no_spine_found(shared_data: Path) -> None:
    def nothing(volume: Volume) -> Segmentation:
        labels = LabelVolume(np.zeros(volume.array.shape, np.uint8), volume.geometry)
        return Segmentation(labels, None, None)

    r = CTAnalyser(segment=nothing).analyse([shared_data / TS / "example_ct.nii.gz"]).result
    assert r.status == "not_analysable"
    assert r.reason is not None and r.reason.startswith("no vertebra found in the field of view")


def test_only_cervical_levels(shared_data: Path) -> None:
    def cervical(volume: Volume) -> Segmentation:
        seg = reference_segment_fn(example_spec(shared_data))(volume)
        arr = np.where(seg.labels.array == 20, 5, 0).astype(np.uint8)
        return Segmentation(LabelVolume(arr, volume.geometry, {"C5": 5}), None, None)

    r = CTAnalyser(segment=cervical).analyse([shared_data / TS / "example_ct.nii.gz"]).result
    assert r.status == "not_analysable"
    assert r.reason == "no vertebra between T4 and L5 in view (found C5)"


def test_segmentation_crash_never_escapes(shared_data: Path) -> None:
    def broken(volume: Volume) -> Segmentation:
        raise RuntimeError("onnx session died")

    r = CTAnalyser(segment=broken).analyse([shared_data / TS / "example_ct.nii.gz"]).result
    assert r.status == "not_analysable"
    # the type and place of the error, never its message (it may quote header values)
    assert r.reason is not None
    assert r.reason.startswith("internal error during analysis (RuntimeError in ")
    assert "onnx session died" not in r.reason
    assert "volume" in r.timings_s


def test_centroid_helper_matches_geometry(shared_data: Path) -> None:
    out = CTAnalyser(segment=reference_segment_fn(example_spec(shared_data))).analyse(
        [shared_data / TS / "example_ct.nii.gz"])
    assert out.labels is not None
    c = centroid_lps(out.labels.array == 21, out.labels.geometry)
    l2 = next(v for v in out.result.vertebrae if v.level == "L2")
    np.testing.assert_allclose(c, l2.centroid_mm, atol=0.01)


def test_soft_tissue_labelled_as_vertebra_is_rejected(shared_data: Path) -> None:
    """A segmentation false positive (the real L1 shape moved 60 mm forward into soft tissue)."""
    def false_positive(volume: Volume) -> Segmentation:
        seg = reference_segment_fn(example_spec(shared_data))(volume)
        l1 = seg.labels.array == 20
        j_axis = int(np.argmax(np.abs(volume.geometry.matrix[1])))  # array axis 2 - j_axis
        shift = int(60 / volume.geometry.spacing[1])
        moved = np.roll(l1, shift if volume.geometry.matrix[1, 1] < 0 else -shift,
                        axis=2 - j_axis)
        arr = np.where(moved, 20, 0).astype(np.uint8)
        return Segmentation(LabelVolume(arr, volume.geometry, {"L1": 20}), None, None)

    r = CTAnalyser(segment=false_positive).analyse([shared_data / TS / "example_ct.nii.gz"]).result
    assert r.status == "not_analysable"
    assert r.reason is not None and "no vertebra found" in r.reason
    assert "segmented L1 rejected as implausible" in r.reason


def test_uncertain_body_outline_is_not_measured_or_graded(shared_data: Path) -> None:
    """A body the network is unsure of (mean body probability below the quality threshold,
    as for the contrast PET/CT slab where a blotchy outline once gave a false grade 3): its
    level and centroid are reported, its density and heights are not, and it is not graded;
    the density call moves to a level measured with confidence."""
    import dataclasses

    reference = reference_segment_fn(example_spec(shared_data))

    def unsure_l1(volume: Volume) -> Segmentation:
        seg = reference(volume)
        return dataclasses.replace(seg, body_confidence={"L1": 0.6, "L2": 0.95, "T12": 0.95})

    r = CTAnalyser(segment=unsure_l1).analyse([shared_data / TS / "example_ct.nii.gz"]).result
    assert r.status == "analysed"
    by_level = {v.level: v for v in r.vertebrae}
    l1 = by_level["L1"]
    assert l1.trabecular_hu is None and l1.heights_mm is None and l1.genant_grade is None
    assert l1.segmentation_confidence == 0.6
    assert any("body outline uncertain" in n for n in l1.notes)
    assert by_level["L2"].trabecular_hu is not None and by_level["L2"].genant_grade is not None
    assert r.findings is not None and r.findings.density_level in ("T12", "L2")


def test_nothing_measurable_is_not_analysable(shared_data: Path) -> None:
    """When every body found is too uncertain to measure, the result is not_analysable with the
    reason (a result with levels and no values would only be noise in PACS)."""
    import dataclasses

    reference = reference_segment_fn(example_spec(shared_data))

    def unsure(volume: Volume) -> Segmentation:
        seg = reference(volume)
        return dataclasses.replace(seg, body_confidence={lv: 0.5 for lv in seg.labels.levels})

    r = CTAnalyser(segment=unsure).analyse([shared_data / TS / "example_ct.nii.gz"]).result
    assert r.status == "not_analysable"
    assert r.reason is not None and "none could be measured" in r.reason
    assert "body outline uncertain" in r.reason


def test_partial_vertebra_at_the_scan_edge_is_not_the_density_level(shared_data: Path) -> None:
    """The real TPTBox crop (L2-L4, the L2 body cut by the top of the scan) with the shipped model.

    The cut L2 fragment is mostly endplate (~250 HU); its body mask on the input grid stops a
    slice short of the edge, so only the segmentation knows it is partial. It must not be the
    density level: the complete, low-density L3 (reference trabecular mean ~54 HU) is.
    """
    r = CTAnalyser().analyse([shared_data / "ct/tptbox_sample/sub-ct_label-22_ct.nii.gz"]).result
    assert r.status == "analysed" and r.findings is not None
    top = max(r.vertebrae, key=lambda v: v.centroid_mm[2])  # LPS: +z is superior
    assert any("field of view" in n or "edge of the scanned" in n for n in top.notes), top.notes
    assert top.genant_grade is None
    assert r.findings.density_level != top.level
    assert r.findings.l1_hu is not None and abs(r.findings.l1_hu - 54.0) <= 15.0
    assert r.findings.osteoporosis_suspected is True


def test_a_ragged_body_outline_is_neither_graded_nor_used_for_density(shared_data: Path) -> None:
    """The example CT's L1 outline made ragged (every other narrow left-right band loses its upper
    half, as a held-out model's L1 looked): its heights depend on where the measurement plane
    falls, so L1 gets no grade and no HU, says why, and the density call moves to the next
    level; the other bodies are untouched."""
    import dataclasses

    reference = reference_segment_fn(example_spec(shared_data))

    def ragged_l1(volume: Volume) -> Segmentation:
        seg = reference(volume)
        assert seg.bodies is not None
        l1 = (seg.labels.array == seg.labels.levels["L1"]) & (seg.bodies > 0)
        kk, _, ii = np.nonzero(l1)
        k_mid, i0, i1 = int(np.median(kk)), int(ii.min()), int(ii.max())
        bodies = seg.bodies.copy()
        for i in range(i0, i1 + 1, 4):  # bands two columns wide, every four columns
            band = np.zeros_like(l1)
            band[:, :, i: i + 2] = True
            above = np.zeros_like(l1)
            above[k_mid:] = True
            bodies[l1 & band & above] = 0
        return dataclasses.replace(seg, bodies=bodies)

    r = CTAnalyser(segment=ragged_l1).analyse([shared_data / TS / "example_ct.nii.gz"]).result
    by = {v.level: v for v in r.vertebrae}
    assert by["L1"].genant_grade is None and by["L1"].trabecular_hu is None
    assert any("outline irregular" in n for n in by["L1"].notes)
    assert all(by[lv].genant_grade == 0 for lv in ("L2", "L3", "L4"))
    assert r.findings is not None and r.findings.density_level in ("T12", "L2")


def _with_spans(seg: Segmentation, disc_mm: float = 8.0) -> Segmentation:
    """The reference segmentation with each body's disc-to-disc distance (what the column
    segmentation reports): its SI extent plus one disc."""
    import dataclasses

    assert seg.bodies is not None
    step = seg.labels.geometry.spacing[2]
    spans = {}
    for level, value in seg.labels.levels.items():
        ks = np.flatnonzero(((seg.labels.array == value) & (seg.bodies > 0)).any(axis=(1, 2)))
        if ks.size:
            spans[level] = (int(ks[-1]) - int(ks[0]) + 1) * step + disc_mm
    return dataclasses.replace(seg, body_span_mm=spans)


def test_a_half_body_outline_is_not_graded(shared_data: Path) -> None:
    """The example CT's L3 body mask loses its upper half (a hollow or half outline, as the
    held-out s0009 bodies had): its heights would read a Genant 3 crush, but its tallest
    height fills half the space between its discs, so L3 gets no grade and no HU and says
    why; its complete neighbours are graded G0."""
    import dataclasses

    reference = reference_segment_fn(example_spec(shared_data))

    def half_l3(volume: Volume) -> Segmentation:
        seg = _with_spans(reference(volume))
        assert seg.bodies is not None
        l3 = (seg.labels.array == seg.labels.levels["L3"]) & (seg.bodies > 0)
        kk = np.flatnonzero(l3.any(axis=(1, 2)))
        bodies = seg.bodies.copy()
        upper = np.zeros_like(l3)
        # the upper half: the k indices of the cranial half (k direction: either)
        cranial = kk[len(kk) // 2:] if volume.geometry.matrix[2, 2] > 0 else kk[: len(kk) // 2]
        upper[cranial] = True
        bodies[l3 & upper] = 0
        return dataclasses.replace(seg, bodies=bodies)

    r = CTAnalyser(segment=half_l3).analyse([shared_data / TS / "example_ct.nii.gz"]).result
    by = {v.level: v for v in r.vertebrae}
    assert by["L3"].genant_grade is None and by["L3"].trabecular_hu is None
    assert any("outline incomplete" in n for n in by["L3"].notes), by["L3"].notes
    assert by["L2"].genant_grade == 0 and by["L4"].genant_grade == 0


def test_two_bodies_in_one_outline_are_not_graded(shared_data: Path) -> None:
    """L3 and L4 of the example CT given as one vertebra (a disc not found; the held-out
    s0009 model did this on a deformed scan): the heights come from one of the two bodies,
    which fills half of the space between the discs found: not graded, no HU, says why."""
    import dataclasses

    reference = reference_segment_fn(example_spec(shared_data))

    def merged(volume: Volume) -> Segmentation:
        seg = _with_spans(reference(volume))
        lv = seg.labels
        arr = lv.array.copy()
        arr[arr == lv.levels["L4"]] = lv.levels["L3"]
        levels = {k: v for k, v in lv.levels.items() if k != "L4"}
        spans = dict(seg.body_span_mm)
        spans["L3"] += spans.pop("L4")
        return dataclasses.replace(seg, labels=dataclasses.replace(lv, array=arr, levels=levels),
                                   body_span_mm=spans)

    r = CTAnalyser(segment=merged).analyse([shared_data / TS / "example_ct.nii.gz"]).result
    by = {v.level: v for v in r.vertebrae}
    assert by["L3"].genant_grade is None and by["L3"].trabecular_hu is None
    assert any("outline incomplete" in n for n in by["L3"].notes), by["L3"].notes
    assert by["L2"].genant_grade == 0


def test_a_body_taller_than_any_vertebra_is_not_graded(shared_data: Path) -> None:
    """The example CT's L3 body mask stretched into one continuous column 2.2 times its
    height (two bodies and the disc between them in one outline): about 60 mm tall, more than
    any vertebral body (``quality.max_body_height_mm``): not graded, no HU, says why."""
    import dataclasses

    reference = reference_segment_fn(example_spec(shared_data))

    def tall(volume: Volume) -> Segmentation:
        seg = reference(volume)
        assert seg.bodies is not None
        lv = seg.labels
        value = lv.levels["L3"]
        l3 = (lv.array == value) & (seg.bodies > 0)
        n = int(np.flatnonzero(l3.any(axis=(1, 2))).size)
        grown = l3.copy()
        for d in range(1, int(1.2 * n)):
            grown[d:] |= l3[:-d]
        arr = lv.array.copy()
        arr[grown] = value
        bodies = seg.bodies.copy()
        bodies[grown] = 1
        return dataclasses.replace(seg, bodies=bodies,
                                   labels=dataclasses.replace(lv, array=arr))

    r = CTAnalyser(segment=tall).analyse([shared_data / TS / "example_ct.nii.gz"]).result
    by = {v.level: v for v in r.vertebrae}
    assert by["L3"].genant_grade is None and by["L3"].trabecular_hu is None
    assert any("outline implausible" in n for n in by["L3"].notes), by["L3"].notes
