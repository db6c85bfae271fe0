"""Comprehensive 3D SR, TID 1500 Measurement Report (IHE AI Results style), with highdicom.

Content tree::

    Imaging Measurement Report (TID 1500)
      Observation context (device observer = osteo-node), procedure reported (CT / MR)
      Image Library (source images)
      Imaging Measurements
        per vertebra  (TID 1411 Volumetric ROI; TID 1501 when the level has no SEG segment)
          tracking identifier = level + tracking UID, finding site = SNOMED vertebra code,
          algorithm identification (name, version, model sha256 as a parameter),
          referenced segment in the SEG (+ its source images),
          Attenuation Coefficient [hnsf'U] with derivation Mean / Standard Deviation,
          anterior / middle / posterior height (mm), height-loss ratio (1),
          qualitative: Genant grade, morphology, level name uncertain (yes/no; when assessed)
        image level  (TID 1501)
          density (Attenuation Coefficient, Mean) at the density level (L1 or fallback),
          qualitative: osteoporosis suspected (yes/no/unknown), contrast phase, density level
          name uncertain (yes/no; when assessed)
      Qualitative Evaluations: Comment = "Decision support only, not a diagnosis...", then the
        level caveat when level names are uncertain, then one comment per red flag

All codes come from ``dicom_sr_templates/codes.yaml`` (:mod:`osteo_node.exporters.codes`).

Modules: :mod:`.content` (items shared by the groups), :mod:`.vertebra` (per-vertebra group),
:mod:`.image_level` (image-level group), :mod:`.comments` (disclaimer, caveat, red flags),
:mod:`.report` (the document, :class:`MeasurementReportSR`), :mod:`.parse` (:func:`read_report`
parses an SR back into plain values, the round trip the tests check against the
AnalysisResult). Every name is re-exported here.
"""

from osteo_node.exporters.sr.comments import disclaimer_container, red_flag_reasons
from osteo_node.exporters.sr.content import (
    algorithm_id,
    level_uncertain_evaluation,
    measurement,
    source_images,
)
from osteo_node.exporters.sr.image_level import IMAGE_LEVEL_ID, ImageLevelGroup
from osteo_node.exporters.sr.parse import ParsedReport, ParsedVertebra, read_report
from osteo_node.exporters.sr.report import MeasurementReportSR, device_observer
from osteo_node.exporters.sr.vertebra import (
    VertebraGroup,
    vertebra_evaluations,
    vertebra_measurements,
)

__all__ = [
    "IMAGE_LEVEL_ID",
    "ImageLevelGroup",
    "MeasurementReportSR",
    "ParsedReport",
    "ParsedVertebra",
    "VertebraGroup",
    "algorithm_id",
    "device_observer",
    "disclaimer_container",
    "level_uncertain_evaluation",
    "measurement",
    "read_report",
    "red_flag_reasons",
    "source_images",
    "vertebra_evaluations",
    "vertebra_measurements",
]
