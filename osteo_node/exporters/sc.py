"""Secondary Capture (highdicom SCImage) of a sagittal overview.

:class:`SagittalSecondaryCapture` wraps any RGB uint8 image (rows, columns, 3) into an SC
instance of the original study. The image comes from
``osteo_node.render.sagittal.render_sagittal_overlay`` (or a renderer the caller passes).
"""

from __future__ import annotations

from dataclasses import dataclass

import highdicom as hd
import numpy as np
from numpy.typing import NDArray

from osteo_node.exporters.common import (
    ExportError,
    ExportSettings,
    apply_common,
    require_source,
    safe_get,
)
from osteo_node.pipeline.types import Volume


@dataclass(frozen=True)
class SagittalSecondaryCapture:
    """An SC instance from an RGB uint8 array (validated in the constructor)."""

    rgb: NDArray[np.uint8]
    volume: Volume
    settings: ExportSettings
    pixel_spacing_mm: tuple[float, float] | None = None  # (row, column)
    patient_orientation: tuple[str, str] = ("P", "F")

    def __post_init__(self) -> None:
        require_source(self.volume)
        a = self.rgb
        if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
            raise ExportError(f"SC needs an RGB uint8 (rows, cols, 3) array, got {a.dtype} "
                              f"{a.shape}")
        if min(a.shape[:2]) < 16:
            raise ExportError(f"SC image too small: {a.shape}")

    def build(self) -> hd.sc.SCImage:
        volume, header = require_source(self.volume)
        s = self.settings
        sc = hd.sc.SCImage(
            pixel_array=np.ascontiguousarray(self.rgb),
            photometric_interpretation="RGB",
            bits_allocated=8,
            coordinate_system="PATIENT",
            study_instance_uid=str(volume.study_instance_uid),
            series_instance_uid=s.series_uid("sc"),
            series_number=int(s.series_numbers["sc"]),
            sop_instance_uid=s.instance_uid("sc"),
            instance_number=1,
            manufacturer=s.manufacturer,
            patient_id=str(safe_get(header, "PatientID") or ""),
            patient_name=safe_get(header, "PatientName") or "",
            patient_birth_date=str(safe_get(header, "PatientBirthDate") or "") or None,
            patient_sex=str(safe_get(header, "PatientSex") or "") or None,
            accession_number=str(safe_get(header, "AccessionNumber") or ""),
            study_id=str(safe_get(header, "StudyID") or ""),
            study_date=str(safe_get(header, "StudyDate") or "") or None,
            study_time=str(safe_get(header, "StudyTime") or "") or None,
            referring_physician_name=safe_get(header, "ReferringPhysicianName") or "",
            pixel_spacing=self.pixel_spacing_mm,
            patient_orientation=self.patient_orientation,
        )
        apply_common(sc, volume, header, s, "sc")
        sc.BodyPartExamined = "SPINE"  # unpaired: no Laterality (General Series 2C)
        sc.ImageType = ["DERIVED", "SECONDARY"]
        sc.BurnedInAnnotation = "YES"
        sc.ImageComments = s.disclaimer
        sc.DerivationDescription = "Sagittal reformat with vertebra labels (osteo-node)"
        return sc
