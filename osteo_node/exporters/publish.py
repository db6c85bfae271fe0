"""The one entry point the node worker and ``osteo-node analyze --dicom-out`` call.

``build_objects(output, uid_root=..., job_key=...)`` turns an :class:`AnalysisOutput` into the
DICOM objects sent to PACS, in dependency order: SEG (so the SR can reference its segments), SR,
SC, KOS (references the key slices and the other three). ``kinds`` selects which are made (the
per-destination routing of the node picks from the returned list with :func:`select`);
:class:`BuildOptions` carries the site's choices (institution, KOS threshold, series numbers...).

Decisions:
- status ``not_analysable``: NOTHING is produced (empty list). A PACS object saying "could not
  analyse" would clutter the study; the reason stays in the node's job record and logs.
- KOS only when the result is flagged (max Genant grade >= ``kos_min_grade`` or osteoporosis
  suspected); SEG only when there is a label map with at least one labelled vertebra.
- NIfTI input (no DICOM header / study) raises :class:`ExportError`: there is no study to add
  objects to.
- UIDs are deterministic per ``job_key`` (see :mod:`osteo_node.exporters.uids`): the same job
  re-exported gives byte-for-byte the same UIDs, so a re-send replaces, not duplicates.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import structlog
from numpy.typing import NDArray
from pydicom.dataset import Dataset

from osteo_node.exporters.common import (
    DEFAULT_DESCRIPTIONS,
    DEFAULT_SERIES_NUMBERS,
    KINDS,
    ExportError,
    ExportSettings,
    require_source,
    sanitized_header,
)
from osteo_node.exporters.kos import KeyImagesKOS, is_flagged
from osteo_node.exporters.sc import SagittalSecondaryCapture
from osteo_node.exporters.seg import SegmentMap, VertebraSegmentation, labelled_levels
from osteo_node.exporters.sr import MeasurementReportSR
from osteo_node.exporters.uids import UidFactory
from osteo_node.pipeline.results import AnalysisOutput, AnalysisResult
from osteo_node.pipeline.types import LabelVolume, Volume
from osteo_node.render.sagittal import render_sagittal_overlay
from osteo_node.safe_errors import describe

log = structlog.get_logger(__name__)

Kind = Literal["sr", "seg", "sc", "kos"]
Renderer = Callable[[Volume, LabelVolume | None, AnalysisResult], NDArray[np.uint8]]


@dataclass(frozen=True)
class ExportedObject:
    kind: Kind
    dataset: Dataset

    @property
    def sop_instance_uid(self) -> str:
        return str(self.dataset.SOPInstanceUID)

    @property
    def sop_class_uid(self) -> str:
        return str(self.dataset.SOPClassUID)

    @property
    def filename(self) -> str:
        return f"{self.kind}_{self.sop_instance_uid}.dcm"


@dataclass(frozen=True)
class BuildOptions:
    """The site's choices for the objects :func:`build_objects` makes (all optional).

    ``institution_name``: written into every object; ``kos_min_grade``: the Genant grade from
    which a KOS flags the study (None: the cited flag grade); ``render``: the SC's sagittal
    overview renderer (None: :func:`osteo_node.render.sagittal.render_sagittal_overlay`);
    ``series_numbers`` / ``descriptions``: per-kind overrides of
    :data:`osteo_node.exporters.common.DEFAULT_SERIES_NUMBERS` / ``DEFAULT_DESCRIPTIONS``.
    """

    institution_name: str | None = None
    kos_min_grade: int | None = None
    render: Renderer | None = None
    series_numbers: Mapping[str, int] | None = None
    descriptions: Mapping[str, str] | None = None


def build_objects(
    output: AnalysisOutput,
    *,
    uid_root: str | None,
    job_key: str,
    kinds: Collection[str] = KINDS,
    options: BuildOptions | None = None,
) -> list[ExportedObject]:
    """DICOM objects (SEG, SR, SC, KOS as applicable) for one analysis, deterministic per job.

    ``options``: the site's choices (see :class:`BuildOptions`; None: all defaults).
    """
    opts = options or BuildOptions()
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown object kinds {sorted(unknown)}; expected {KINDS}")
    result = output.result
    if result.status != "analysed":
        log.info("export_skipped_not_analysable", series_uid=result.series_instance_uid,
                 reason=result.reason)
        return []
    volume, header = require_source(output.volume)
    volume = replace(volume, header=sanitized_header(header))
    settings = ExportSettings(
        uids=UidFactory(job_key, uid_root), institution_name=opts.institution_name,
        series_numbers={**DEFAULT_SERIES_NUMBERS, **(opts.series_numbers or {})},
        descriptions={**DEFAULT_DESCRIPTIONS, **(opts.descriptions or {})})
    build = _Builder(output, volume, settings, opts, kinds)
    objects = build.all()
    log.info("export_built", series_uid=result.series_instance_uid,
             study_uid=volume.study_instance_uid,
             objects=[(o.kind, o.sop_instance_uid) for o in objects], failed=build.failed)
    if build.failed and not objects:
        raise ExportError(f"no result object could be built ({'; '.join(build.failed)})")
    return objects


class _Builder:
    """Builds the objects one kind at a time; a kind that fails is logged (type and place,
    no patient data) and left out, the others still go out (the SR without SEG references
    when the SEG failed)."""

    def __init__(self, output: AnalysisOutput, volume: Volume, settings: ExportSettings,
                 opts: BuildOptions, kinds: Collection[str]) -> None:
        self.output, self.volume, self.settings = output, volume, settings
        self.opts, self.kinds = opts, kinds
        model = output.result.model
        self.algo = (model.name if model else settings.model_name,
                     model.version if model else settings.software_version)
        self.failed: list[str] = []

    def _guarded(self, kind: str, make: Callable[[], Any]) -> Any:
        try:
            return make()
        except Exception as exc:  # noqa: BLE001 - one object's failure keeps the others
            self.failed.append(f"{kind}: {describe(exc)}")
            log.error("export_object_failed", kind=kind, error=describe(exc),
                      series_uid=self.output.result.series_instance_uid)
            return None

    def _seg(self) -> tuple[Dataset, SegmentMap] | None:
        labels, result = self.output.labels, self.output.result
        if labels is None or labels.array.shape != self.volume.array.shape or \
                not labelled_levels(labels):
            if labels is not None:
                log.warning("export_no_seg", series_uid=result.series_instance_uid,
                            reason="label map missing, empty or on another grid")
            return None
        built: tuple[Dataset, SegmentMap] | None = self._guarded(
            "seg", lambda: VertebraSegmentation(self.volume, labels, self.settings, *self.algo,
                                                result=result).build())
        return built

    def all(self) -> list[ExportedObject]:
        result, volume, settings, kinds = (self.output.result, self.volume, self.settings,
                                           self.kinds)
        objects: list[ExportedObject] = []
        seg = self._seg()
        seg_ds, segment_map = seg if seg is not None else (None, None)
        if seg_ds is not None and "seg" in kinds:
            objects.append(ExportedObject("seg", seg_ds))
        seg_ref = seg_ds if "seg" in kinds else None
        if "sr" in kinds and result.vertebrae:
            sr = self._guarded("sr", lambda: MeasurementReportSR(
                result, settings, volume,
                segment_map=segment_map if seg_ref is not None else None, seg_dataset=seg_ref,
                level_slices=segment_map.slices if segment_map else {}).build())
            if sr is not None:
                objects.append(ExportedObject("sr", sr))
        if "sc" in kinds:
            render = self.opts.render or render_sagittal_overlay
            # the canvas has banner and text panels: no single physical pixel spacing
            sc = self._guarded("sc", lambda: SagittalSecondaryCapture(
                np.asarray(render(volume, self.output.labels, result), dtype=np.uint8), volume,
                settings, pixel_spacing_mm=None).build())
            if sc is not None:
                objects.append(ExportedObject("sc", sc))
        if "kos" in kinds and is_flagged(result, self.opts.kos_min_grade):
            others = [o.dataset for o in objects]
            kos = self._guarded("kos", lambda: KeyImagesKOS(
                result, volume, settings, others=others,
                min_grade=self.opts.kos_min_grade).build())
            if kos is not None:
                objects.append(ExportedObject("kos", kos))
        return objects


def select(objects: Sequence[ExportedObject], kinds: Collection[str]) -> list[ExportedObject]:
    """The objects of the given kinds (per-destination routing)."""
    return [o for o in objects if o.kind in kinds]


def write_objects(objects: Sequence[ExportedObject], directory: Path) -> list[Path]:
    """Write Part-10 files ``<kind>_<SOPInstanceUID>.dcm``; returns the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for obj in objects:
        path = directory / obj.filename
        obj.dataset.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
