"""The labelled real CT cases of the shared data folder and how to read their references."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def shared_data() -> Path:
    return Path(os.environ.get("OSTEO_SHARED_DATA", REPO.parent / "shared" / "data")).resolve()


@dataclass(frozen=True)
class LabelledCase:
    name: str
    image: str  # relative to the shared data folder (NIfTI file or DICOM folder)
    vertebrae: str
    numbering: str
    bodies: str | None = None
    body_values: tuple[int, ...] = ()


CASES: tuple[LabelledCase, ...] = (
    LabelledCase("example_ct", "ct/totalseg_example/example_ct.nii.gz",
                 "ct/totalseg_example/example_ct_vertebrae.nii.gz", "totalseg",
                 "ct/totalseg_example/vertebrae_body.nii.gz", (1,)),
    LabelledCase("s0009", "ct/totalseg_dataset/s0009_ct.nii.gz",
                 "ct/totalseg_dataset/s0009_vertebrae.nii.gz", "totalseg_dataset"),
    LabelledCase("s0003", "ct/totalseg_dataset/s0003_ct.nii.gz",
                 "ct/totalseg_dataset/s0003_vertebrae.nii.gz", "totalseg_dataset"),
    LabelledCase("s0002", "ct/totalseg_dataset/s0002_ct.nii.gz",
                 "ct/totalseg_dataset/s0002_vertebrae.nii.gz", "totalseg_dataset"),
    LabelledCase("tptbox", "ct/tptbox_sample/sub-ct_label-22_ct.nii.gz",
                 "ct/tptbox_sample/sub-ct_seg-vert_label-22_msk.nii.gz", "verse",
                 "ct/tptbox_sample/sub-ct_seg-subreg_label-22_msk.nii.gz", (49, 50)),
    LabelledCase("contrast_slab", "ct/totalseg_example/dicom",
                 "ct/totalseg_example/dicom_seg_reference.nii.gz", "totalseg"),
)
