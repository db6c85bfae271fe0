"""Result-like DICOM objects for outbox tests, derived from real CT images.

Secondary Captures (highdicom SCImage, in the CT's study, pixel data = the CT slice in a bone
window) and a Key Object Selection document flagging CT images. The lead re-runs the delivery
tests with the exporters' real SR/SEG/SC/KOS.
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

MANUFACTURER = "osteo-node tests"


def bone_window_u8(ct: Dataset) -> np.ndarray:
    hu = ct.pixel_array.astype(np.float32) * float(ct.get("RescaleSlope", 1)) + float(
        ct.get("RescaleIntercept", 0)
    )
    return np.clip((hu + 400.0) / 1400.0 * 255.0, 0, 255).astype(np.uint8)


def secondary_capture(
    ct: Dataset,
    series_instance_uid: str,
    instance_number: int,
    transfer_syntax_uid: str = ExplicitVRLittleEndian,
) -> hd.sc.SCImage:
    """A Secondary Capture of one CT slice, in the CT's study (new SOP Instance UID)."""
    return hd.sc.SCImage.from_ref_dataset(
        ct,
        bone_window_u8(ct),
        "MONOCHROME2",
        8,
        "PATIENT",
        series_instance_uid,
        901,
        generate_uid(),
        instance_number,
        MANUFACTURER,
        patient_orientation=("L", "P"),
        transfer_syntax_uid=transfer_syntax_uid,
        series_description="osteo-node outbox test SC",
    )


def key_object_selection(images: Sequence[Dataset]) -> hd.ko.KeyObjectSelectionDocument:
    """A KOS ("Of Interest") flagging ``images`` (all of one study)."""
    content = hd.ko.KeyObjectSelection(
        document_title=hd.sr.CodedConcept("113000", "DCM", "Of Interest"),
        referenced_objects=list(images),
    )
    return hd.ko.KeyObjectSelectionDocument(
        evidence=list(images),
        content=content,
        series_instance_uid=generate_uid(),
        series_number=902,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer=MANUFACTURER,
    )
