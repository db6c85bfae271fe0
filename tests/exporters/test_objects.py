"""SR / SEG / SC / KOS built from a realistic AnalysisOutput (real CT slices, real reference
labels, fixture result): dciodvfy without errors, dsrdump reads the SR, highdicom parses all
back, SR values equal the result, everything lands in the original study."""

from __future__ import annotations

import dataclasses
import io
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
import pytest
from PIL import Image

from osteo_node import DISCLAIMER, logging_setup
from osteo_node.exporters.kos import referenced_instance_uids
from osteo_node.exporters.publish import (
    BuildOptions,
    ExportedObject,
    build_objects,
    select,
    write_objects,
)
from osteo_node.exporters.seg import segment_levels
from osteo_node.exporters.sr import read_report
from osteo_node.pipeline.results import AnalysisOutput
from tests.exporters.conftest import PATIENT_ID, PATIENT_NAME, STUDY_UID

pytestmark = pytest.mark.shared_data
UID_ROOT = "1.2.826.0.1.3680043.10.999"


@pytest.fixture(scope="module")
def objects(ct20_output: AnalysisOutput) -> dict[str, ExportedObject]:
    objs = build_objects(ct20_output, uid_root=UID_ROOT, job_key="test-job-ct20")
    return {o.kind: o for o in objs}


@pytest.fixture(scope="module")
def written(objects: dict[str, ExportedObject], tmp_path_factory: pytest.TempPathFactory,
            artifacts_dir: Path) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("dicom_out")
    paths = write_objects(list(objects.values()), out)
    keep = artifacts_dir / "exporters"
    keep.mkdir(exist_ok=True)
    for p in paths:
        shutil.copy(p, keep / f"ct20_{p.name.split('_')[0]}.dcm")
    return {p.name.split("_")[0]: p for p in paths}


def test_all_four_kinds_made(objects: dict[str, ExportedObject]) -> None:
    assert sorted(objects) == ["kos", "sc", "seg", "sr"]


@pytest.mark.parametrize("kind", ["sr", "seg", "sc", "kos"])
def test_dciodvfy_reports_no_errors(written: dict[str, Path], kind: str) -> None:
    exe = shutil.which("dciodvfy")
    if exe is None:
        pytest.skip("dicom3tools dciodvfy not installed")
    proc = subprocess.run([exe, str(written[kind])], capture_output=True, text=True,
                          timeout=120, check=False)
    text = proc.stdout + proc.stderr
    errors = [line for line in text.splitlines() if line.startswith("Error")]
    assert not errors, text
    # Warnings allowed; the only ones expected are private / source-copied coding schemes.
    warnings = [line for line in text.splitlines() if line.startswith("Warning")]
    unexpected = [w for w in warnings if "Unrecognized defined term" not in w]
    assert not unexpected, text


def test_dsrdump_reads_sr(written: dict[str, Path], ct20_output: AnalysisOutput) -> None:
    exe = shutil.which("dsrdump")
    if exe is None:
        pytest.skip("dcmtk dsrdump not installed")
    proc = subprocess.run([exe, "-Ec", "-Ee", str(written["sr"])], capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for text in ("Imaging Measurement Report", "T11 vertebra", "T12 vertebra",
                 "Attenuation Coefficient", "Hounsfield unit", "Genant grade 2 (moderate)",
                 "Wedge-shaped", "Osteoporosis suspected on CT", "Referenced Segment",
                 "Qualitative Evaluations"):
        assert text in out, text
    t12 = next(v for v in ct20_output.result.vertebrae if v.level == "T12")
    assert t12.trabecular_hu is not None
    assert f'"{t12.trabecular_hu.mean}"' in out


def test_sr_values_equal_result(objects: dict[str, ExportedObject],
                                ct20_output: AnalysisOutput) -> None:
    ds = pydicom.dcmread(_roundtrip_bytes(objects["sr"].dataset))
    parsed = read_report(ds)
    result = ct20_output.result
    assert sorted(parsed.vertebrae) == sorted(v.level for v in result.vertebrae)
    for v in result.vertebrae:
        p = parsed.vertebrae[v.level]
        assert v.trabecular_hu is not None and v.heights_mm is not None
        assert p.values["hu_mean"] == pytest.approx(v.trabecular_hu.mean, abs=1e-9)
        assert p.values["hu_sd"] == pytest.approx(v.trabecular_hu.sd, abs=1e-9)
        assert p.values["anterior_height"] == pytest.approx(v.heights_mm.anterior)
        assert p.values["middle_height"] == pytest.approx(v.heights_mm.middle)
        assert p.values["posterior_height"] == pytest.approx(v.heights_mm.posterior)
        assert p.values["height_loss"] == pytest.approx(v.height_loss)
        assert p.genant_grade == v.genant_grade
        assert p.morphology == v.morphology
    f = result.findings
    assert f is not None
    assert parsed.density_level == f.density_level
    assert parsed.density_hu == pytest.approx(f.l1_hu)
    assert parsed.osteoporosis_suspected is f.osteoporosis_suspected
    assert parsed.contrast_phase == result.contrast_phase
    assert parsed.disclaimer == DISCLAIMER
    assert result.model is not None
    assert parsed.algorithm_name == result.model.name
    assert parsed.algorithm_version == result.model.version
    assert f"sha256={result.model.sha256}" in parsed.algorithm_parameters


def _codes_used(ds: Any) -> set[tuple[str, str, str]]:
    """(scheme, value, meaning) of every coded entry anywhere in the dataset."""
    out: set[tuple[str, str, str]] = set()
    for elem in ds.iterall():
        if elem.VR == "SQ":
            for item in elem.value:
                if "CodeValue" in item and "CodingSchemeDesignator" in item:
                    out.add((str(item.CodingSchemeDesignator), str(item.CodeValue),
                             str(item.get("CodeMeaning", ""))))
    return out


def _plain(meaning: str) -> str:
    return re.sub(r" \([a-z /]+\)$", "", meaning).casefold()


def test_sr_uses_standard_codes_where_they_exist(objects: dict[str, ExportedObject],
                                                 ct20_output: AnalysisOutput) -> None:
    """Heights are (121207, DCM, "Height") with an Anterior / Middle / Posterior topographical
    modifier of the finding site, not private codes; every SCT / DCM / NCIt / RADLEX
    code the SR uses is in DICOM's dictionary (PS3.16 as shipped in pydicom) with the same
    meaning, apart from the codes.yaml entries marked external; 99OSTEO only for the
    documented private concepts."""
    from pydicom.sr._concepts_dict import concepts

    from osteo_node.exporters import codes

    book = codes.load()
    ds = objects["sr"].dataset
    used = _codes_used(ds)
    external = {(e.scheme, e.value) for _, _, e in book.all_entries() if e.checked == "external"}
    for scheme, value, meaning in used:
        if scheme not in ("SCT", "DCM", "NCIt", "RADLEX") \
                or (scheme, value) in external:
            continue
        # highdicom writes some meanings in title case ("Source Series for Segmentation") or
        # without the SNOMED semantic tag ("Source" for "Source (attribute)"); codes.yaml's
        # own meanings are compared exactly in test_codes.py
        meanings = {_plain(d[value][0]) for d in concepts.get(scheme, {}).values()
                    if value in d}
        assert _plain(meaning) in meanings, (scheme, value, meaning, meanings)
    private = {v for s, v, _ in used if s == book.private_scheme.designator}
    allowed = {e.value for _, _, e in book.all_entries()
               if e.scheme == book.private_scheme.designator}
    assert private and private <= allowed
    assert not private & {"HA", "HM", "HP"}  # the old private height codes
    assert {("DCM", "121207", "Height"), ("SCT", "255549009", "Anterior"),
            ("NCIt", "C25569", "Middle"), ("SCT", "255551008", "Posterior"),
            ("SCT", "106233006", "Topographical modifier")} <= used
    # each vertebra: three heights, told apart by the finding site's topographical modifier
    sr = hd.sr.Comprehensive3DSR.from_dataset(ds)
    groups = [g for g in sr.content.get_volumetric_roi_measurement_groups()
              + sr.content.get_image_measurement_groups()
              if str(g.tracking_identifier).endswith("heights")]
    assert len(groups) == len(ct20_output.result.vertebrae)
    for g in groups:
        heights = g.get_measurements(name=book.concept("height"))
        mods = sorted(str(m.finding_sites[0].topographical_modifier.meaning) for m in heights)
        assert mods == ["Anterior", "Middle", "Posterior"]
        assert {m.finding_sites[0].value.meaning for m in heights} == \
            {g.finding_sites[0].value.meaning}


def test_sr_groups_reference_seg_segments(objects: dict[str, ExportedObject]) -> None:
    parsed = read_report(objects["sr"].dataset)
    seg_levels = segment_levels(objects["seg"].dataset)
    for level, pv in parsed.vertebrae.items():
        assert pv.segment_number is not None
        assert seg_levels[pv.segment_number] == level
    sr = objects["sr"].dataset
    evidence = {str(s.ReferencedSOPInstanceUID)
                for st in sr.CurrentRequestedProcedureEvidenceSequence
                for se in st.ReferencedSeriesSequence for s in se.ReferencedSOPSequence}
    assert objects["seg"].sop_instance_uid in evidence
    # SR private coding scheme is declared
    assert sr.CodingSchemeIdentificationSequence[0].CodingSchemeDesignator == "99OSTEO"


def test_seg_masks_equal_labels(objects: dict[str, ExportedObject],
                                ct20_output: AnalysisOutput) -> None:
    seg = hd.seg.Segmentation.from_dataset(pydicom.dcmread(_roundtrip_bytes(
        objects["seg"].dataset)))
    volume, labels = ct20_output.volume, ct20_output.labels
    assert volume is not None and labels is not None
    uids = [s.sop_instance_uid for s in volume.sources]
    levels = segment_levels(seg)
    pixels = seg.get_pixels_by_source_instance(uids, segment_numbers=sorted(levels))
    for idx, number in enumerate(sorted(levels)):
        expected = labels.array == labels.levels[levels[number]]
        assert np.array_equal(pixels[..., idx].astype(bool), expected), levels[number]


def test_seg_is_compressed_losslessly_and_decodes_to_the_same_masks(
        objects: dict[str, ExportedObject], ct20_output: AnalysisOutput) -> None:
    """Issue 17: the SEG frames are JPEG 2000 lossless; decoded (as the outbox does for a
    destination that takes only uncompressed SEG) they are the same masks."""
    from pydicom.uid import JPEG2000Lossless

    ds = pydicom.dcmread(_roundtrip_bytes(objects["seg"].dataset))
    assert ds.file_meta.TransferSyntaxUID == JPEG2000Lossless
    compressed_size = _roundtrip_bytes(objects["seg"].dataset).stat().st_size
    from osteo_node.outbox.association import decode_in_place

    frames = hd.seg.Segmentation.from_dataset(ds).pixel_array
    decode_in_place(ds)
    assert not ds.file_meta.TransferSyntaxUID.is_compressed
    decoded = hd.seg.Segmentation.from_dataset(pydicom.dcmread(_roundtrip_bytes(ds)))
    assert np.array_equal(decoded.pixel_array, frames)
    assert _roundtrip_bytes(ds).stat().st_size > 2 * compressed_size


def test_common_modules_original_study(objects: dict[str, ExportedObject]) -> None:
    series = set()
    for kind, obj in objects.items():
        ds = obj.dataset
        assert ds.StudyInstanceUID == STUDY_UID, kind
        assert str(ds.PatientName) == PATIENT_NAME and ds.PatientID == PATIENT_ID, kind
        assert ds.PatientBirthDate == "19480312" and ds.PatientSex == "F", kind
        assert ds.AccessionNumber == "ACC-20221208-1" and ds.StudyID == "4711", kind
        assert str(ds.ReferringPhysicianName) == "Referrer^Rita", kind
        assert ds.StudyDate == "20221208", kind
        assert ds.Manufacturer == "osteo-node", kind
        assert ds.SoftwareVersions, kind
        assert "decision support" in ds.SeriesDescription, kind
        assert ds.SOPInstanceUID.startswith(UID_ROOT + "."), kind
        assert len(ds.SOPInstanceUID) <= 64
        series.add(ds.SeriesInstanceUID)
    assert len(series) == 4


def test_deterministic_uids(ct20_output: AnalysisOutput,
                            objects: dict[str, ExportedObject]) -> None:
    again = {o.kind: o for o in build_objects(ct20_output, uid_root=UID_ROOT,
                                              job_key="test-job-ct20")}
    for kind, obj in objects.items():
        assert again[kind].sop_instance_uid == obj.sop_instance_uid
        assert again[kind].dataset.SeriesInstanceUID == obj.dataset.SeriesInstanceUID
    other = build_objects(ct20_output, uid_root=None, job_key="another-job", kinds=("sr",))
    assert other[0].sop_instance_uid.startswith("2.25.")
    assert other[0].sop_instance_uid != objects["sr"].sop_instance_uid
    # every UID the objects carry is the same again (a re-sent object is the same object), and
    # the UIDs made for this job come from the configured root
    for kind, obj in objects.items():
        first, second = _uids(obj.dataset), _uids(again[kind].dataset)
        assert first == second, (kind, set(first.items()) ^ set(second.items()))
    dim_org = objects["seg"].dataset.DimensionOrganizationSequence[0].DimensionOrganizationUID
    assert dim_org.startswith(UID_ROOT + ".")
    assert {str(i.DimensionOrganizationUID)
            for i in objects["seg"].dataset.DimensionIndexSequence} == {dim_org}


def _uids(ds: Any, path: str = "") -> dict[str, str]:
    """Every UI element of ``ds`` (nested sequences included), by path."""
    out: dict[str, str] = {}
    for elem in ds:
        where = f"{path}/{elem.keyword or elem.tag}"
        if elem.VR == "SQ":
            for n, item in enumerate(elem.value):
                out |= _uids(item, f"{where}[{n}]")
        elif elem.VR == "UI" and elem.value:
            out[where] = str(elem.value)
    return out


def test_kos_flags_key_slice_and_references_objects(objects: dict[str, ExportedObject],
                                                    ct20_output: AnalysisOutput) -> None:
    kos_ds = objects["kos"].dataset
    kos = hd.ko.KeyObjectSelectionDocument.from_dataset(kos_ds)
    title = kos_ds.ConceptNameCodeSequence[0]
    assert (title.CodeValue, title.CodingSchemeDesignator) == ("113000", "DCM")
    refs = referenced_instance_uids(kos_ds)
    volume = ct20_output.volume
    assert volume is not None
    t12 = next(v for v in ct20_output.result.vertebrae if v.level == "T12")
    k = round(float(volume.geometry.lps_to_index(t12.centroid_mm)[2]))
    assert volume.sources[k].sop_instance_uid in refs
    for kind in ("sr", "seg", "sc"):
        assert objects[kind].sop_instance_uid in refs
    assert kos.SOPInstanceUID == objects["kos"].sop_instance_uid


def test_no_kos_when_not_flagged(ct20_output: AnalysisOutput) -> None:
    r = ct20_output.result
    assert r.findings is not None
    calm = dataclasses.replace(
        r, findings=dataclasses.replace(r.findings, osteoporosis_suspected=False),
        vertebrae=[dataclasses.replace(v, genant_grade=min(v.genant_grade or 0, 1))
                   for v in r.vertebrae])
    out = AnalysisOutput(calm, ct20_output.volume, ct20_output.labels)
    kinds = [o.kind for o in build_objects(out, uid_root=UID_ROOT, job_key="calm")]
    assert kinds == ["seg", "sr", "sc"]


def test_kos_for_osteoporosis_only(ct20_output: AnalysisOutput) -> None:
    r = ct20_output.result
    assert r.findings is not None and ct20_output.volume is not None
    density_only = dataclasses.replace(
        r, vertebrae=[dataclasses.replace(v, genant_grade=0) for v in r.vertebrae],
        findings=dataclasses.replace(r.findings, max_genant_grade=0))
    objs = {o.kind: o for o in build_objects(
        AnalysisOutput(density_only, ct20_output.volume, ct20_output.labels),
        uid_root=UID_ROOT, job_key="density-only")}
    kos = objs["kos"].dataset
    level = r.findings.density_level
    v = next(v for v in r.vertebrae if v.level == level)
    k = round(float(ct20_output.volume.geometry.lps_to_index(v.centroid_mm)[2]))
    assert ct20_output.volume.sources[k].sop_instance_uid in referenced_instance_uids(kos)
    text = " ".join(str(i.get("TextValue", "")) for i in kos.ContentSequence)
    assert "osteoporosis suspected" in text and "Genant" not in text


def test_not_analysable_sends_nothing(ct20_output: AnalysisOutput) -> None:
    r = dataclasses.replace(ct20_output.result, status="not_analysable",
                            reason="no spine in field of view", vertebrae=[], findings=None)
    out = AnalysisOutput(r, ct20_output.volume, ct20_output.labels)
    assert build_objects(out, uid_root=UID_ROOT, job_key="na") == []


def test_sr_without_seg_uses_tid1501_groups(ct20_output: AnalysisOutput) -> None:
    objs = build_objects(ct20_output, uid_root=None, job_key="no-seg", kinds=("sr",))
    assert [o.kind for o in objs] == ["sr"]
    parsed = read_report(objs[0].dataset)
    assert sorted(parsed.vertebrae) == ["T11", "T12"]
    assert all(p.segment_number is None for p in parsed.vertebrae.values())
    t12 = next(v for v in ct20_output.result.vertebrae if v.level == "T12")
    assert parsed.vertebrae["T12"].genant_grade == t12.genant_grade


def test_series_overrides(ct20_output: AnalysisOutput) -> None:
    over = BuildOptions(series_numbers={"sr": 77}, descriptions={"sr": "Osteo SR"})
    objs = build_objects(ct20_output, uid_root=None, job_key="over", kinds=("sr",), options=over)
    assert objs[0].dataset.SeriesNumber == 77
    assert objs[0].dataset.SeriesDescription == "Osteo SR"


def test_no_phi_in_logs_while_exporting(ct20_output: AnalysisOutput, tmp_path: Path) -> None:
    stream = io.StringIO()
    logging_setup.configure("DEBUG", json=True, stream=stream)
    try:
        objs = build_objects(ct20_output, uid_root=None, job_key="phi-check")
        write_objects(objs, tmp_path)
    finally:
        logging_setup.configure("INFO", json=True)
    logs = stream.getvalue()
    assert "export_built" in logs
    for phi in (PATIENT_NAME, PATIENT_ID, "Fixturesson", "19480312"):
        assert phi not in logs


def test_select_by_destination(objects: dict[str, ExportedObject]) -> None:
    chosen = select(list(objects.values()), {"sr", "kos"})
    assert sorted(o.kind for o in chosen) == ["kos", "sr"]


def test_sc_pixels_saved_for_review(objects: dict[str, ExportedObject], artifacts_dir: Path
                                    ) -> None:
    ds = objects["sc"].dataset
    img = hd.Image.from_dataset(pydicom.dcmread(_roundtrip_bytes(ds)))
    rgb = img.pixel_array
    assert rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.dtype == np.uint8
    assert ds.BurnedInAnnotation == "YES" and ds.ImageComments == DISCLAIMER
    path = artifacts_dir / "exporters" / "ct20_sc.png"
    path.parent.mkdir(exist_ok=True)
    Image.fromarray(rgb).save(path)
    _assert_banner_and_colour(rgb)


def _assert_banner_and_colour(rgb: np.ndarray) -> None:
    # The top rows are the red disclaimer banner; vertebra labels are coloured, not grey.
    r, g, b = (int(c) for c in rgb[2, 2])
    assert r > 120 and g < 60 and b < 60, (r, g, b)
    body = rgb[40:, :]
    coloured = np.abs(body[..., 0].astype(int) - body[..., 2].astype(int)) > 40
    assert coloured.mean() > 0.01


def _roundtrip_bytes(ds: pydicom.Dataset) -> Path:
    """Write to a temp Part-10 file and return its path (re-read tests the encoding)."""
    import tempfile

    f = Path(tempfile.mkdtemp()) / "obj.dcm"
    ds.save_as(f, enforce_file_format=True)
    return f
