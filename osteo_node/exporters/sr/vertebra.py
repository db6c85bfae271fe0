"""Per-vertebra measurement groups.

- TID 1411 Volumetric ROI referencing the vertebra's SEG segment (TID 1501 with source images
  only when the level has no segment): height loss, morphology, Genant grade, level
  uncertainty (and the heights when their lines are not known).
- TID 1501 "<level> heights" (when the lines are known): the three heights, each with the line
  it was measured on (TID 320: SCOORD3D POLYLINE of the two endplate points, patient
  coordinates in the source's frame of reference, purpose "Source"), so a TID 1500-aware
  viewer can draw them (TID 1410/1411 groups may not hold coordinates).
- TID 1410 Planar ROI (when the ROI outline is known): the trabecular HU mean and SD with the
  ROI as an image region, a closed SCOORD POLYLINE on the source slice of the ROI's largest section
  (pixel-corner vertices: the polygon encloses exactly the ROI's pixels on that slice; the HU
  are over the whole 3D ROI, of which this is the largest section). Without an outline the HU
  stay in the first group, as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import highdicom as hd
import numpy as np

from osteo_node.exporters.codes import CodeBook
from osteo_node.exporters.common import ExportError
from osteo_node.exporters.seg import SegmentMap
from osteo_node.exporters.sr.content import level_uncertain_evaluation, measurement, source_images
from osteo_node.pipeline.results import HeightLine, RoiOutline, VertebraResult
from osteo_node.pipeline.stages.body_heights import HEIGHT_NAMES
from osteo_node.pipeline.types import Geometry, SourceInstance


def density_measurements(v: VertebraResult, book: CodeBook) -> list[hd.sr.Measurement]:
    """Trabecular HU mean and SD (empty without a trabecular ROI)."""
    if v.trabecular_hu is None:
        return []
    return [measurement(book.concept("attenuation"), v.trabecular_hu.mean, book.unit("hu"),
                        book.concept("mean")),
            measurement(book.concept("attenuation"), v.trabecular_hu.sd, book.unit("hu"),
                        book.concept("standard_deviation"))]


def _line_coordinates(line: HeightLine, frame_of_reference_uid: str
                      ) -> hd.sr.CoordinatesForMeasurement3D:
    return hd.sr.CoordinatesForMeasurement3D(
        graphic_type=hd.sr.GraphicTypeValues3D.POLYLINE,
        graphic_data=np.array([line.top_mm, line.bottom_mm], dtype=np.float64),
        frame_of_reference_uid=frame_of_reference_uid)


def height_measurements(v: VertebraResult, book: CodeBook,
                        frame_of_reference_uid: str | None = None) -> list[hd.sr.Measurement]:
    """The anterior, middle and posterior heights: NUM (121207, DCM, "Height") with Finding
    Site = the vertebra and its Topographical modifier = Anterior / Middle / Posterior (TID 300);
    each with the line it was measured on (TID 320 SCOORD3D POLYLINE, purpose "Source") when
    the line and the frame of reference are known."""
    out: list[hd.sr.Measurement] = []
    if v.heights_mm is None:
        return out
    lines = {ln.name: ln for ln in v.height_lines}
    for attr in HEIGHT_NAMES:  # also the keys of codes.yaml height_positions
        value = getattr(v.heights_mm, attr)
        if value is None:
            continue
        line = lines.get(attr)
        coords = ([_line_coordinates(line, frame_of_reference_uid)]
                  if line is not None and frame_of_reference_uid else None)
        site = hd.sr.FindingSite(book.vertebra(v.level),
                                 topographical_modifier=book.height_position(attr))
        out.append(hd.sr.Measurement(name=book.concept("height"), value=float(value),
                                     unit=book.unit("mm"), finding_sites=[site],
                                     referenced_coordinates=coords))
    return out


def vertebra_measurements(v: VertebraResult, book: CodeBook, *, with_density: bool = True,
                          with_heights: bool = True) -> list[hd.sr.Measurement]:
    """Measurements of one vertebra's own group (algorithm identification is on the group):
    HU and heights unless they have groups of their own, and the height loss."""
    out: list[hd.sr.Measurement] = density_measurements(v, book) if with_density else []
    if with_heights:
        out.extend(height_measurements(v, book))
    if v.height_loss is not None:
        out.append(measurement(book.concept("height_loss"), v.height_loss, book.unit("ratio")))
    return out


def vertebra_evaluations(v: VertebraResult, book: CodeBook) -> list[hd.sr.QualitativeEvaluation]:
    """Morphology, Genant grade (when graded) and level-name uncertainty (when assessed)."""
    out = [hd.sr.QualitativeEvaluation(book.concept("morphology"),
                                       book.get("morphologies", v.morphology).concept())]
    if v.genant_grade is not None:
        out.append(hd.sr.QualitativeEvaluation(book.concept("genant_grade"),
                                               book.get("genant_grades", v.genant_grade).concept()))
    if v.level_uncertain is not None:
        out.append(level_uncertain_evaluation(v.level_uncertain, book))
    return out


@dataclass(frozen=True)
class RoiRegion:
    """An ROI outline as a closed SCOORD POLYLINE on one source slice: (column, row) pixel
    coordinates, the first point repeated at the end (2D SCOORD has no POLYGON type)."""

    source: SourceInstance
    slice_index: int
    points: Any  # (n, 2) float32


def roi_region(outline: RoiOutline, geometry: Geometry, sources: Sequence[SourceInstance]
               ) -> RoiRegion | None:
    """The outline on the source slice it lies on, or None when it is not on one slice."""
    ijk = geometry.lps_to_index(np.asarray(outline.points_mm, dtype=np.float64))
    k = float(np.median(ijk[:, 2]))
    if not np.allclose(ijk[:, 2], k, atol=0.05) or not 0 <= round(k) < len(sources):
        return None
    xy = ijk[:, :2] + 0.5  # centre-based index -> SCOORD (0, 0 = top-left pixel's corner)
    xy = np.vstack([xy, xy[:1]]).astype(np.float32)
    return RoiRegion(sources[round(k)], round(k), xy)


@dataclass(frozen=True)
class VertebraGroup:
    """TID 1411 (or TID 1501 without a segment) measurement group of one vertebra, and its
    TID 1410 trabecular-ROI group when the ROI outline is known."""

    vertebra: VertebraResult
    sources: Sequence[SourceInstance]  # slices through this vertebra
    segment_map: SegmentMap | None
    tracking_uid: str
    algo: hd.sr.AlgorithmIdentification
    #: the whole series' geometry and slices (ROI outline -> source slice), and its frame of
    #: reference (height lines); None: regions and lines are not written
    geometry: Geometry | None = None
    all_sources: Sequence[SourceInstance] = ()
    frame_of_reference_uid: str | None = None
    roi_tracking_uid: str | None = None
    heights_tracking_uid: str | None = None
    source_series_uid: str | None = None  # the segment's source, by series

    def referenced_sources(self) -> list[SourceInstance]:
        """The source slices the groups reference one by one (for the image library)."""
        region = self._roi_region()
        out = [region.source] if region is not None else []
        has_segment = self.segment_map is not None and \
            self.segment_map.number(self.vertebra.level) is not None
        if not has_segment or not self.source_series_uid:
            out.extend(self.sources)
        return out

    def __post_init__(self) -> None:
        if not self.sources:
            raise ExportError(f"{self.vertebra.level}: no source image to reference")

    def _roi_region(self) -> RoiRegion | None:
        trab = self.vertebra.trabecular_hu
        if trab is None or trab.outline is None or self.geometry is None \
                or not self.all_sources or self.roi_tracking_uid is None:
            return None
        return roi_region(trab.outline, self.geometry, self.all_sources)

    def _has_lines(self) -> bool:
        return bool(self.frame_of_reference_uid and self.vertebra.height_lines
                    and self.vertebra.heights_mm is not None)

    def build_all(self, book: CodeBook) -> list[Any]:
        """The vertebra's group; its heights group when the height lines are known (TID 1411 and
        TID 1410 groups may not hold coordinates); its trabecular-ROI group when the ROI
        outline is known."""
        region = self._roi_region()
        lines = self._has_lines()
        groups = [self.build(book, with_density=region is None, with_heights=not lines)]
        if lines:
            groups.append(self._heights_group(book))
        if region is not None:
            groups.append(self._roi_group(book, region))
        return groups

    def _heights_group(self, book: CodeBook) -> Any:
        v = self.vertebra
        assert self.heights_tracking_uid is not None
        return hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(
                uid=self.heights_tracking_uid, identifier=f"{v.level} heights"),
            finding_type=book.concept("finding_type_vertebra"),
            algorithm_id=self.algo,
            finding_sites=[hd.sr.FindingSite(book.vertebra(v.level))],
            # no source images: each line carries its frame of reference
            measurements=height_measurements(v, book, self.frame_of_reference_uid))

    def _roi_group(self, book: CodeBook, region: RoiRegion) -> Any:
        v = self.vertebra
        assert self.roi_tracking_uid is not None
        return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(
                uid=self.roi_tracking_uid, identifier=f"{v.level} trabecular ROI"),
            referenced_region=hd.sr.ImageRegion(
                graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
                graphic_data=region.points,
                source_image=hd.sr.SourceImageForRegion(
                    referenced_sop_class_uid=region.source.sop_class_uid,
                    referenced_sop_instance_uid=region.source.sop_instance_uid)),
            finding_type=book.concept("finding_type_vertebra"),
            algorithm_id=self.algo,
            finding_sites=[hd.sr.FindingSite(book.vertebra(v.level))],
            measurements=density_measurements(v, book),
        )

    def build(self, book: CodeBook, *, with_density: bool = True,
              with_heights: bool = True) -> Any:
        v = self.vertebra
        common: dict[str, Any] = dict(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=self.tracking_uid,
                                                         identifier=v.level),
            finding_type=book.concept("finding_type_vertebra"),
            algorithm_id=self.algo,
            finding_sites=[hd.sr.FindingSite(book.vertebra(v.level))],
            measurements=vertebra_measurements(v, book, with_density=with_density,
                                               with_heights=with_heights),
            qualitative_evaluations=vertebra_evaluations(v, book),
        )
        number = self.segment_map.number(v.level) if self.segment_map else None
        if self.segment_map is not None and number is not None:
            # the source series, not each slice: the SEG itself references its source frames
            segment = hd.sr.ReferencedSegment(
                sop_class_uid=self.segment_map.sop_class_uid,
                sop_instance_uid=self.segment_map.sop_instance_uid,
                segment_number=number,
                source_series=hd.sr.SourceSeriesForSegmentation(self.source_series_uid),
            ) if self.source_series_uid else hd.sr.ReferencedSegment(
                sop_class_uid=self.segment_map.sop_class_uid,
                sop_instance_uid=self.segment_map.sop_instance_uid,
                segment_number=number,
                source_images=source_images(hd.sr.SourceImageForSegmentation, self.sources),
            )
            return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                referenced_segment=segment, **common)
        return hd.sr.MeasurementsAndQualitativeEvaluations(
            source_images=source_images(hd.sr.SourceImageForMeasurementGroup, self.sources),
            **common)
