"""A realistic AnalysisOutput for the exporter tests, from REAL data in ../shared/data.

- Volume: the 20 real JPEG 2000 CT slices of ct/totalseg_example/dicom, whose Study / Series /
  SOP Instance UIDs are empty: the fixture fills them (and a test patient name / ID, needed to
  check the patient module is copied and that no PHI is logged) into copies under tmp.
- Labels: the real reference labels ``dicom_seg_reference.nii.gz`` (TotalSegmentator v2
  numbering: 32 = T12, 33 = T11) resampled onto the slice grid. A FAKE for segmentation, which
  these tests are not about.
- AnalysisResult: a hand-written FIXTURE consistent with the images: centroids, trabecular
  HU and the ROI outlines are computed from the real labels and CT values (the ROI: the label
  eroded by 3 voxels); heights, their lines, grades and morphology are invented (T12 given
  Genant grade 2 so the KOS path runs). It is not the analyser's output.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid
from scipy import ndimage

from osteo_node.pipeline.results import (
    AnalysisOutput,
    AnalysisResult,
    Findings,
    HeightLine,
    Heights,
    ModelInfo,
    TrabecularHU,
    VertebraResult,
)
from osteo_node.pipeline.stages.roi_outline import roi_outlines
from osteo_node.pipeline.stages.volume import load_dicom, read_headers
from osteo_node.pipeline.types import LabelVolume, Volume

PATIENT_NAME = "Fixturesson^Ingrid"
PATIENT_ID = "OSTEO-FIX-48213"
STUDY_UID = generate_uid(entropy_srcs=["osteo-node exporters fixture study"])
SERIES_UID = generate_uid(entropy_srcs=["osteo-node exporters fixture series"])
TOTALSEG_LEVELS = {"T11": 33, "T12": 32}


def _fill_uids(src_dir: Path, dst_dir: Path) -> list[Path]:
    dst_dir.mkdir(parents=True, exist_ok=True)
    out = []
    for f in sorted(src_dir.iterdir()):
        ds = pydicom.dcmread(f)
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID = STUDY_UID
        ds.SeriesInstanceUID = SERIES_UID
        ds.SeriesNumber = 3
        ds.StudyID = "4711"
        ds.AccessionNumber = "ACC-20221208-1"
        ds.PatientName = PATIENT_NAME
        ds.PatientID = PATIENT_ID
        ds.PatientBirthDate = "19480312"
        ds.PatientSex = "F"
        ds.ReferringPhysicianName = "Referrer^Rita"
        path = dst_dir / f"{f.name}.dcm"
        ds.save_as(path)
        out.append(path)
    return out


def load_volume(paths: list[Path]) -> Volume:
    headers, _ = read_headers(paths)
    return load_dicom(headers).volume


def labels_on_grid(nifti: Path, volume: Volume) -> LabelVolume:
    import SimpleITK as sitk

    from osteo_node.pipeline.sitk_io import resample_labels

    arr = resample_labels(sitk.ReadImage(str(nifti)), volume.geometry, volume.array.shape)
    keep = np.isin(arr, list(TOTALSEG_LEVELS.values()))
    arr = np.where(keep, arr, 0).astype(np.uint8)
    return LabelVolume(array=arr, geometry=volume.geometry, levels=dict(TOTALSEG_LEVELS),
                       confidence={k: 0.9 for k in TOTALSEG_LEVELS})


def fixture_result(volume: Volume, labels: LabelVolume) -> AnalysisResult:
    vertebrae = []
    invented = {  # level: (heights a/m/p, height loss, morphology, grade)
        "T11": (Heights(24.1, 23.0, 25.2), 0.05, "normal", 0),
        "T12": (Heights(16.3, 21.4, 25.9), 0.37, "wedge", 2),
    }
    for level, value in labels.levels.items():
        mask = labels.array == value
        inner = ndimage.binary_erosion(mask, iterations=3)
        hu = volume.array[inner]
        idx = np.argwhere(mask).mean(axis=0)  # (k, j, i)
        centroid = volume.geometry.index_to_lps((idx[2], idx[1], idx[0]))
        heights, loss, morph, grade = invented[level]
        axial, sagittal = roi_outlines(inner, np.zeros(3, dtype=np.int64), volume.geometry)
        c = np.asarray(centroid)
        lines = tuple(
            HeightLine(name, tuple(float(x) for x in c + np.array([0, dy, h / 2])),  # type: ignore[arg-type]
                       tuple(float(x) for x in c + np.array([0, dy, -h / 2])))  # type: ignore[arg-type]
            for name, dy, h in (("anterior", -10.0, heights.anterior),
                                ("middle", 0.0, heights.middle),
                                ("posterior", 10.0, heights.posterior)) if h)
        vertebrae.append(VertebraResult(
            level=level, level_confidence=0.9, label_value=value,
            centroid_mm=(float(centroid[0]), float(centroid[1]), float(centroid[2])),
            trabecular_hu=TrabecularHU(mean=round(float(hu.mean()), 2),
                                       median=round(float(np.median(hu)), 2),
                                       sd=round(float(hu.std()), 2), voxels=int(hu.size),
                                       outline=axial, sagittal_outline=sagittal),
            heights_mm=heights, height_loss=loss, morphology=morph,  # type: ignore[arg-type]
            genant_grade=grade, height_lines=lines))
    vertebrae.sort(key=lambda v: v.level)
    t12 = next(v for v in vertebrae if v.level == "T12")
    assert t12.trabecular_hu is not None
    return AnalysisResult(
        status="analysed", reason=None, modality="CT", study_instance_uid=STUDY_UID,
        series_instance_uid=SERIES_UID, contrast_phase="portal_venous",
        model=ModelInfo(name="fixture-vertebrae", version="0.0-test",
                        sha256=hashlib.sha256(b"fixture model").hexdigest(),
                        execution_provider="CPUExecutionProvider"),
        vertebrae=vertebrae,
        findings=Findings(osteoporosis_suspected=True, l1_hu=t12.trabecular_hu.mean,
                          density_level="T12", density_category="low",
                          vcf_levels=("T12",), max_genant_grade=2),
        label_map=dict(labels.levels),
    )


@pytest.fixture(scope="session")
def ct20_files(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The 20 real CT slices with Study/Series/SOP UIDs and a test patient filled in."""
    base = shared_data / "ct" / "totalseg_example"
    return _fill_uids(base / "dicom", tmp_path_factory.mktemp("ct20"))


@pytest.fixture(scope="session")
def ct20_output(shared_data: Path, ct20_files: list[Path]) -> AnalysisOutput:
    base = shared_data / "ct" / "totalseg_example"
    volume = load_volume(ct20_files)
    labels = labels_on_grid(base / "dicom_seg_reference.nii.gz", volume)
    assert set(np.unique(labels.array)) == {0, 32, 33}, "reference labels did not land on grid"
    return AnalysisOutput(result=fixture_result(volume, labels), volume=volume, labels=labels)
