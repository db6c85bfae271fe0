"""Key Object Selection document flagging the key images of a positive result.

Made only when the result is positive for the PACS flag (max Genant grade >= the configured
grade, default from clinical_data/vertebral_fracture.yaml, or osteoporosis suspected). It
references, for each flagged vertebra (or the density level when only osteoporosis is
suspected), the source slice through its centroid, plus
the SR, SEG and SC of the same job, with document title (113000, DCM, "Of Interest") and the
reason as Key Object Description.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import highdicom as hd
from pydicom.dataset import Dataset

from osteo_node.clinical.fracture_flag import flag_min_genant_grade
from osteo_node.exporters import codes as codes_mod
from osteo_node.exporters.common import (
    ExportError,
    ExportSettings,
    apply_common,
    density_level,
    level_caveat,
    require_source,
    source_datasets,
    vertebra_level,
)
from osteo_node.pipeline.results import AnalysisResult, VertebraResult
from osteo_node.pipeline.types import Volume


def flagged_vertebrae(result: AnalysisResult, min_grade: int | None = None
                      ) -> list[VertebraResult]:
    """Vertebrae at or above ``min_grade`` (default: the one cited flag grade)."""
    limit = flag_min_genant_grade() if min_grade is None else min_grade
    return [v for v in result.vertebrae
            if v.genant_grade is not None and v.genant_grade >= limit]


def is_flagged(result: AnalysisResult, min_grade: int | None = None) -> bool:
    if result.status != "analysed":
        return False
    suspected = bool(result.findings and result.findings.osteoporosis_suspected)
    return suspected or bool(flagged_vertebrae(result, min_grade))


def flag_reason(result: AnalysisResult, min_grade: int | None = None) -> str:
    """Why the result is flagged; uncertain level names are shown as "L1?" and followed by the
    level caveat."""
    parts = [f"{vertebra_level(v)} Genant grade {v.genant_grade}"
             for v in flagged_vertebrae(result, min_grade)]
    f = result.findings
    if f is not None and f.osteoporosis_suspected:
        where = f" ({density_level(f)} {f.l1_hu:.0f} HU)" if f.density_level and \
            f.l1_hu is not None else ""
        parts.append(f"osteoporosis suspected{where}")
    caveat = level_caveat(result)
    text = "; ".join(parts)
    return f"{text}. {caveat}" if caveat else text


def centroid_slice(volume: Volume, v: VertebraResult) -> int:
    k = float(volume.geometry.lps_to_index(v.centroid_mm)[2])
    return int(min(max(round(k), 0), volume.array.shape[0] - 1))


@dataclass(frozen=True)
class KeyImagesKOS:
    """KOS builder; refuses results that are not flagged."""

    result: AnalysisResult
    volume: Volume
    settings: ExportSettings
    others: Sequence[Dataset] = ()  # SR / SEG / SC of the same job, referenced too
    min_grade: int | None = None

    def __post_init__(self) -> None:
        require_source(self.volume)
        if not is_flagged(self.result, self.min_grade):
            raise ExportError("result is not flagged: no key object selection")

    def key_slices(self) -> list[int]:
        chosen = flagged_vertebrae(self.result, self.min_grade)
        f = self.result.findings
        if f is not None and f.osteoporosis_suspected and f.density_level:
            chosen += [v for v in self.result.vertebrae if v.level == f.density_level]
        if not chosen:  # flagged but no located vertebra: the middle slice
            return [self.volume.array.shape[0] // 2]
        return sorted({centroid_slice(self.volume, v) for v in chosen})

    def build(self) -> hd.ko.KeyObjectSelectionDocument:
        book = codes_mod.load()
        volume, header = require_source(self.volume)
        s = self.settings
        sources = source_datasets(volume, header)
        keys = [sources[k] for k in self.key_slices()]
        referenced = [*keys, *self.others]
        content = hd.ko.KeyObjectSelection(
            document_title=book.concept("kos_title"),
            referenced_objects=referenced,
            description=f"{flag_reason(self.result, self.min_grade)}. {s.disclaimer}"[:1024],
        )
        kos = hd.ko.KeyObjectSelectionDocument(
            evidence=referenced,
            content=content,
            series_instance_uid=s.series_uid("kos"),
            series_number=int(s.series_numbers["kos"]),
            sop_instance_uid=s.instance_uid("kos"),
            instance_number=1,
            manufacturer=s.manufacturer,
            institution_name=s.institution_name,
        )
        apply_common(kos, volume, header, s, "kos")
        return kos


def referenced_instance_uids(kos: Dataset) -> list[str]:
    """SOP Instance UIDs referenced by a KOS (for checks and tests)."""
    out: list[str] = []
    for item in kos.ContentSequence:
        for ref in item.get("ReferencedSOPSequence", []):
            out.append(str(ref.ReferencedSOPInstanceUID))
    return out
