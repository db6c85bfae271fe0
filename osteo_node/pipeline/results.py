"""Typed analysis results (the contract between analysers, exporters and the node).

``AnalysisResult.to_json()`` produces the fixed JSON schema of ``osteo-node analyze`` (issue 2);
extra keys are allowed, the listed ones are fixed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from osteo_node.pipeline.types import LabelVolume, Volume

Status = Literal["analysed", "not_analysable"]
Morphology = Literal["normal", "wedge", "biconcave", "crush", "indeterminate"]

# Vertebral levels in cranio-caudal order; the single source of truth for level names.
LEVELS: tuple[str, ...] = (
    *(f"C{i}" for i in range(1, 8)),
    *(f"T{i}" for i in range(1, 13)),
    *(f"L{i}" for i in range(1, 6)),
    "S1",
)


def level_index(level: str) -> int:
    """Cranio-caudal position of a level name (C1 = 0)."""
    return LEVELS.index(level)


def relative_index(level: str) -> int | None:
    """n for a relative label "Vn" (vertebrae counted head to feet when no anatomical level could
    be named, e.g. MR without the lumbosacral junction); None for an anatomical level."""
    if len(level) > 1 and level[0] == "V" and level[1:].isdigit():
        return int(level[1:])
    return None


def is_known_level(level: str) -> bool:
    """An anatomical level (C1..S1) or a relative label V1, V2, ..."""
    return level in LEVELS or relative_index(level) is not None


def level_sort_key(level: str) -> tuple[int, int]:
    """Head-to-feet order for anatomical levels and relative labels (relative ones after)."""
    n = relative_index(level)
    return (1, n) if n is not None else (0, level_index(level))


Point3 = tuple[float, float, float]


@dataclass(frozen=True)
class RoiOutline:
    """A closed polygon (LPS mm) on one image plane: the outline of a measured region, vertices
    at pixel corners (``pipeline.stages.roi_outline``)."""

    points_mm: tuple[Point3, ...]


@dataclass(frozen=True)
class HeightLine:
    """Where a vertebral height was measured: the line between the two endplates (LPS mm)."""

    name: str  # anterior | middle | posterior
    top_mm: Point3
    bottom_mm: Point3


@dataclass(frozen=True)
class TrabecularHU:
    mean: float
    median: float
    sd: float
    voxels: int
    volume_mm3: float | None = None
    #: the ROI's outline on its largest axial section (drawn as the SR's image region)
    outline: RoiOutline | None = None
    #: the outline of the ROI projected on the sagittal plane (drawn on the SC)
    sagittal_outline: RoiOutline | None = None


@dataclass(frozen=True)
class Heights:
    anterior: float | None
    middle: float | None
    posterior: float | None


@dataclass(frozen=True)
class VertebraResult:
    level: str
    level_confidence: float
    label_value: int  # value in the LabelVolume / SEG segment for this vertebra
    centroid_mm: tuple[float, float, float]  # LPS
    trabecular_hu: TrabecularHU | None
    heights_mm: Heights | None
    height_loss: float | None  # 0..1 fraction of the reference height lost
    morphology: Morphology
    genant_grade: int | None  # 0..3, None when heights could not be measured
    notes: tuple[str, ...] = ()
    #: CT body texture (osteo_node.clinical.red_flags.BodyTexture.to_json): focal lytic /
    #: sclerotic clusters and heterogeneity, the imaging input of the pathological red flags
    texture: dict[str, Any] | None = None
    #: mean network probability of the body class over this body (None: not from the model)
    segmentation_confidence: float | None = None
    #: the level NAME is uncertain (level_confidence below quality.min_level_confidence of
    #: clinical_data/ct_screening.yaml, decided by pipeline.stages.grade.level_uncertain);
    #: None: not assessed by the analyser that made this result
    level_uncertain: bool | None = None
    #: where the reported heights were measured (empty when no height is reported)
    height_lines: tuple[HeightLine, ...] = ()


@dataclass(frozen=True)
class Findings:
    osteoporosis_suspected: bool | None
    l1_hu: float | None
    density_level: str | None = None  # level the density call used (L1 or fallback)
    density_category: str | None = None
    vcf_levels: tuple[str, ...] = ()
    max_genant_grade: int | None = None
    #: the vertebra used for the density call is named by assumption (its level_uncertain)
    density_level_uncertain: bool | None = None
    #: levels that got a Genant grade; empty: fractures not assessed (no vertebra gradable),
    #: so an empty vcf_levels then means "not assessed", not "no fracture"; None: not reported
    graded_levels: tuple[str, ...] | None = None


@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: str
    sha256: str
    execution_provider: str


@dataclass
class AnalysisResult:
    status: Status
    reason: str | None
    modality: str
    study_instance_uid: str | None
    series_instance_uid: str | None
    contrast_phase: str | None
    model: ModelInfo | None
    vertebrae: list[VertebraResult] = field(default_factory=list)
    findings: Findings | None = None
    timings_s: dict[str, float] = field(default_factory=dict)
    label_map: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        for v in d["vertebrae"]:
            v["centroid_mm"] = list(v["centroid_mm"])
            v["notes"] = list(v["notes"])
        if d["findings"] is not None:
            d["findings"]["vcf_levels"] = list(d["findings"]["vcf_levels"])
            if d["findings"]["graded_levels"] is not None:
                d["findings"]["graded_levels"] = list(d["findings"]["graded_levels"])
        from osteo_node import DISCLAIMER

        d["disclaimer"] = DISCLAIMER
        return d


@dataclass
class AnalysisOutput:
    """Everything an analyser returns: the result plus the images the exporters need."""

    result: AnalysisResult
    volume: Volume | None = None
    labels: LabelVolume | None = None
