"""DICOM Segmentation (highdicom) with one segment per labelled vertebra.

BINARY segmentation (the most widely supported SOP class), frames compressed losslessly (JPEG
2000, ``SEG_TRANSFER_SYNTAX``): segment numbers 1..N follow the
cranio-caudal order of the labelled levels, each coded with its SNOMED CT vertebra code
(``dicom_sr_templates/codes.yaml``) and referencing the source CT/MR instances. The
:class:`SegmentMap` tells the SR which segment holds which level.

A level name the analysis marks uncertain is labelled the way the SC and SR show it: Segment
Label "L1?" and a Segment Description with the caveat (``exporters.common``: the analyser's
decision per reported vertebra, the same rule for labels it does not report). The segmented
property type and tracking identifier keep the level's code and name, as the SR does.
"""

from __future__ import annotations

from dataclasses import dataclass

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import JPEG2000Lossless

from osteo_node.exporters import codes as codes_mod
from osteo_node.exporters.common import (
    LEVEL_CAVEAT,
    ExportError,
    ExportSettings,
    apply_common,
    label_level,
    require_source,
    slice_indices,
    source_datasets,
)
from osteo_node.pipeline.results import AnalysisResult, is_known_level, level_sort_key
from osteo_node.pipeline.types import LabelVolume, Volume

SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
#: JPEG 2000 lossless frames: the chest series' SEG is 0.24 MB instead of 8.1 MB uncompressed
#: (one 1-bit frame per slice per segment). A destination that accepts only uncompressed
#: syntaxes for SEG gets it decoded by the outbox (``outbox.association``), same content.
SEG_TRANSFER_SYNTAX = JPEG2000Lossless


def level_rgb(level: str) -> tuple[int, int, int]:
    """A stable, distinguishable display colour per level (same in SEG and SC)."""
    hue = (level_sort_key(level)[1] * 0.618034) % 1.0
    h6 = hue * 6.0
    x = 1.0 - abs(h6 % 2.0 - 1.0)
    r, g, b = [(1, x, 0), (x, 1, 0), (0, 1, x), (0, x, 1), (x, 0, 1), (1, 0, x)][int(h6) % 6]
    return (int(60 + 195 * r), int(60 + 195 * g), int(60 + 195 * b))


@dataclass(frozen=True)
class SegmentMap:
    """Which segment of which SEG instance holds each level, and the slices it covers."""

    sop_class_uid: str
    sop_instance_uid: str
    numbers: dict[str, int]  # level -> segment number
    slices: dict[str, list[int]]  # level -> slice indices k with voxels

    def number(self, level: str) -> int | None:
        return self.numbers.get(level)


def labelled_levels(labels: LabelVolume) -> list[tuple[str, int]]:
    """(level, label value) of the levels present in the label map, cranio-caudal order."""
    present = set(np.unique(labels.array).tolist())
    levels = [(lv, val) for lv, val in labels.levels.items() if val in present and val != 0]
    unknown = [lv for lv, _ in levels if not is_known_level(lv)]
    if unknown:
        raise ExportError(f"label map has levels that are neither C1..S1 nor V1..Vn: {unknown}")
    return sorted(levels, key=lambda t: level_sort_key(t[0]))


@dataclass(frozen=True)
class VertebraSegmentation:
    """Builder for the SEG of one analysis; validates the label map against the volume."""

    volume: Volume
    labels: LabelVolume
    settings: ExportSettings
    algorithm_name: str
    algorithm_version: str
    #: the analysis the labels belong to; its level-uncertainty decisions label the segments
    result: AnalysisResult | None = None

    def __post_init__(self) -> None:
        require_source(self.volume)
        if self.labels.array.shape != self.volume.array.shape:
            raise ExportError(
                f"label map shape {self.labels.array.shape} differs from the volume "
                f"{self.volume.array.shape}"
            )
        if not labelled_levels(self.labels):
            raise ExportError("label map has no labelled vertebra")

    def shown_label(self, level: str) -> str:
        """The level as labelled: ``"L1?"`` when the analysis marks its name uncertain."""
        if self.result is None:
            return level
        return label_level(level, self.result, self.labels)

    def _describe(
        self,
        number: int,
        level: str,
        book: codes_mod.CodeBook,
        algorithm: hd.AlgorithmIdentificationSequence,
    ) -> hd.seg.SegmentDescription:
        label = self.shown_label(level)
        item = hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=label,
            segmented_property_category=book.concept("segment_category"),
            segmented_property_type=book.vertebra(level),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            tracking_uid=self.settings.uids.uid(f"track-{level}"),
            tracking_id=level,
            display_color=hd.color.CIELabColor.from_rgb(*level_rgb(level)),
        )
        if label != level:
            item.SegmentDescription = f"{label} (level uncertain). {LEVEL_CAVEAT}"
        return item

    def build(self) -> tuple[hd.seg.Segmentation, SegmentMap]:
        book = codes_mod.load()
        volume, header = require_source(self.volume)
        levels = labelled_levels(self.labels)
        algorithm = hd.AlgorithmIdentificationSequence(
            name=self.algorithm_name,
            family=book.concept("algorithm_family"),
            version=self.algorithm_version,
        )
        seg_array = np.zeros(self.labels.array.shape, dtype=np.uint8)
        descriptions = []
        numbers: dict[str, int] = {}
        slices: dict[str, list[int]] = {}
        for number, (level, value) in enumerate(levels, start=1):
            mask = self.labels.array == value
            seg_array[mask] = number
            numbers[level] = number
            slices[level] = slice_indices(mask)
            descriptions.append(self._describe(number, level, book, algorithm))
        sources = source_datasets(volume, header)
        seg = hd.seg.Segmentation(
            source_images=sources,
            pixel_array=seg_array,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions,
            series_instance_uid=self.settings.series_uid("seg"),
            series_number=int(self.settings.series_numbers["seg"]),
            sop_instance_uid=self.settings.instance_uid("seg"),
            instance_number=1,
            manufacturer=self.settings.manufacturer,
            manufacturer_model_name=self.settings.model_name,
            software_versions=self.settings.software_version,
            device_serial_number=self.settings.device_serial_number,
            content_description="Vertebrae; decision support, not a diagnosis",
            content_label="VERTEBRAE",
            content_creator_name="osteo-node^",
            omit_empty_frames=True,
            transfer_syntax_uid=SEG_TRANSFER_SYNTAX,
        )
        _own_dimension_organization(seg, self.settings.uids.uid("seg-dimension-organization"))
        apply_common(seg, volume, header, self.settings, "seg")
        segment_map = SegmentMap(SEG_SOP_CLASS, str(seg.SOPInstanceUID), numbers, slices)
        return seg, segment_map


def _own_dimension_organization(seg: Dataset, uid: str) -> None:
    """highdicom draws the Dimension Organization UID at random from its own root; use this
    job's deterministic UID from the configured root instead, so that a re-built object is
    identical and every UID the node makes comes from its root."""
    for item in (*seg.DimensionOrganizationSequence, *seg.DimensionIndexSequence):
        item.DimensionOrganizationUID = uid


def segment_levels(seg: Dataset) -> dict[int, str]:
    """Parse a SEG back: segment number -> level (from the vertebra codes)."""
    book = codes_mod.load()
    out: dict[int, str] = {}
    for item in seg.SegmentSequence:
        code = item.SegmentedPropertyTypeCodeSequence[0]
        out[int(item.SegmentNumber)] = book.reverse(
            "vertebrae", str(code.CodingSchemeDesignator), str(code.CodeValue)
        )
    return out
