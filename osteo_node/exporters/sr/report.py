"""The TID 1500 Measurement Report document (Comprehensive 3D SR) of one analysis: observer
context, image library, the measurement groups and the comments, in the original study."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence

from osteo_node.exporters import codes as codes_mod
from osteo_node.exporters.codes import CodeBook
from osteo_node.exporters.common import (
    ExportError,
    ExportSettings,
    apply_common,
    level_caveat,
    require_source,
    source_datasets,
)
from osteo_node.exporters.seg import SegmentMap
from osteo_node.exporters.sr.comments import disclaimer_container, red_flag_reasons
from osteo_node.exporters.sr.content import algorithm_id
from osteo_node.exporters.sr.image_level import ImageLevelGroup
from osteo_node.exporters.sr.vertebra import VertebraGroup
from osteo_node.exporters.uids import deterministic_uid
from osteo_node.pipeline.results import AnalysisResult
from osteo_node.pipeline.types import SourceInstance, Volume


def coding_schemes(ds: Dataset) -> set[str]:
    """Every Coding Scheme Designator used anywhere in the dataset (nested sequences too)."""
    found: set[str] = set()
    for elem in ds.iterall():
        if elem.keyword == "CodingSchemeDesignator" and elem.value:
            found.add(str(elem.value))
    return found


def device_observer(settings: ExportSettings, book: CodeBook) -> hd.sr.ObserverContext:
    """The observer context: osteo-node as the device observer."""
    s = settings
    return hd.sr.ObserverContext(
        observer_type=book.concept("device_observer"),
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=deterministic_uid("osteo-node device", "device", s.uids.root),
            name=s.model_name, manufacturer_name=s.manufacturer,
            model_name=s.software_version))


@dataclass
class MeasurementReportSR:
    """Builder of the TID 1500 SR for one analysis (validated in the constructor)."""

    result: AnalysisResult
    settings: ExportSettings
    volume: Volume  # with a DICOM header (checked)
    segment_map: SegmentMap | None = None
    seg_dataset: Dataset | None = None
    level_slices: dict[str, list[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.result.status != "analysed":
            raise ExportError("a measurement report needs an analysed result")
        if not self.result.vertebrae:
            raise ExportError("no vertebra in the result")
        require_source(self.volume)
        if (self.segment_map is None) != (self.seg_dataset is None):
            raise ExportError("segment_map and seg_dataset go together")

    def _slices(self, level: str) -> list[SourceInstance]:
        ks = self.level_slices.get(level) or (
            self.segment_map.slices.get(level, []) if self.segment_map else [])
        if not ks:
            return list(self.volume.sources)
        return [self.volume.sources[k] for k in ks]

    def _groups(self, book: CodeBook, red_flags: list[str]
                ) -> tuple[list[Any], set[str]]:
        """One group per vertebra (plus its heights and ROI groups), then the image-level group
        (when there are findings); and the SOP Instance UIDs they reference one by one."""
        s = self.settings
        algo = algorithm_id(self.result, s)
        frame_uid = str(getattr(self.volume.header, "FrameOfReferenceUID", "") or "") or None
        groups: list[Any] = []
        used: set[str] = set()
        for v in self.result.vertebrae:
            vg = VertebraGroup(
                v, self._slices(v.level), self.segment_map, s.uids.uid(f"track-{v.level}"),
                algo, geometry=self.volume.geometry, all_sources=self.volume.sources,
                frame_of_reference_uid=frame_uid,
                roi_tracking_uid=s.uids.uid(f"track-roi-{v.level}"),
                heights_tracking_uid=s.uids.uid(f"track-heights-{v.level}"),
                source_series_uid=self.volume.series_instance_uid)
            groups.extend(vg.build_all(book))
            used.update(src.sop_instance_uid for src in vg.referenced_sources())
        if self.result.findings is not None:
            level = self.result.findings.density_level
            sources = self._slices(level) if level else list(self.volume.sources)
            groups.append(ImageLevelGroup(self.result, sources, s.uids.uid("track-image"),
                                          algo, red_flags).build(book))
            used.update(src.sop_instance_uid for src in sources)
        return groups, used

    def build(self) -> hd.sr.Comprehensive3DSR:
        book = codes_mod.load()
        volume, header = require_source(self.volume)
        s = self.settings
        red_flags = red_flag_reasons(self.result)
        groups, used = self._groups(book, red_flags)
        procedure = "procedure_mr" if volume.modality == "MR" else "procedure_ct"
        slice_datasets = source_datasets(volume, header)
        # the image library (TID 1600) lists the images the content references one by one,
        # not every slice of the series (the evidence sequence lists them all)
        library = [ds for ds, src in zip(slice_datasets, volume.sources, strict=True)
                   if src.sop_instance_uid in used] or slice_datasets[:1]
        report = hd.sr.MeasurementReport(
            observation_context=hd.sr.ObservationContext(
                observer_device_context=device_observer(s, book)),
            procedure_reported=book.concept(procedure),
            imaging_measurements=groups,
            title=book.concept("report_title"),
            referenced_images=library,
        )
        report[0].ContentSequence.append(
            disclaimer_container(s.disclaimer, book, red_flags, level_caveat(self.result)))
        evidence = list(slice_datasets)
        if self.seg_dataset is not None:
            evidence.append(self.seg_dataset)
        sr = hd.sr.Comprehensive3DSR(
            evidence=evidence,
            content=report[0],
            series_instance_uid=s.series_uid("sr"),
            series_number=int(s.series_numbers["sr"]),
            sop_instance_uid=s.instance_uid("sr"),
            instance_number=1,
            manufacturer=s.manufacturer,
            is_complete=True,
            is_final=False,
            is_verified=False,
            institution_name=s.institution_name,
        )
        apply_common(sr, volume, header, s, "sr")
        if book.private_scheme.designator in coding_schemes(sr):
            # declared only while the SR uses a private code (standard schemes are in PS3.16)
            scheme = book.private_scheme.identification_item()
            sr.CodingSchemeIdentificationSequence = DicomSequence(  # type: ignore[assignment]
                [scheme])
        return sr
