"""Secondary Capture (highdicom SCImage) of a sagittal overview.

:class:`SagittalSecondaryCapture` wraps any RGB uint8 image (rows, columns, 3) into an SC
instance of the original study. The image normally comes from
``osteo_node.render.sagittal.render_sagittal_overlay`` (CTANALYSIS); :func:`render_overview`
is the exporter's own plain renderer used when that module is not installed: a sagittal
reformat through the vertebral centroids, bone window, colour labels, level / HU / Genant grade
text and a "decision support, not a diagnosis" banner.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import highdicom as hd
import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFont

from osteo_node.exporters.common import (
    ExportError,
    ExportSettings,
    apply_common,
    label_level,
    level_caveat,
    require_source,
    safe_get,
)
from osteo_node.exporters.seg import level_rgb
from osteo_node.pipeline.results import AnalysisResult
from osteo_node.pipeline.types import LabelVolume, Volume

BONE_WINDOW = (300.0, 1500.0)  # display centre / width (HU), not a clinical threshold
SLAB_MM = 6.0  # half-thickness of the label projection around the sagittal plane
CROP_MM = 70.0  # anterior-posterior half width of the overview around the spine
MIN_WIDTH_PX = 640
BANNER_PX = 28
CAVEAT_PX = 24  # footer line with the level-uncertainty caveat
CAVEAT_RGB = (255, 200, 0)


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


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _window(a: NDArray[np.float32]) -> NDArray[np.uint8]:
    centre, width = BONE_WINDOW
    g = (a - (centre - width / 2)) / width
    return (np.clip(g, 0.0, 1.0) * 255).astype(np.uint8)


def _label_text(result: AnalysisResult, level: str, labels: LabelVolume | None) -> str:
    name = label_level(level, result, labels)  # "L1?" when the name is uncertain
    for v in result.vertebrae:
        if v.level == level:
            hu = f"{v.trabecular_hu.mean:.0f} HU" if v.trabecular_hu else "HU n/a"
            grade = f"G{v.genant_grade}" if v.genant_grade is not None else "G?"
            return f"{name}  {hu}  {grade}"
    return name


def _nearest_label_projection(labels: NDArray[Any], i_mid: int, half: int) -> NDArray[Any]:
    """(k, j) label image: at each pixel the label closest to the sagittal plane i_mid."""
    out = np.zeros(labels.shape[:2], dtype=labels.dtype)
    for off in sorted(range(-half, half + 1), key=abs):
        i = i_mid + off
        if 0 <= i < labels.shape[2]:
            plane = labels[:, :, i]
            empty = out == 0
            out[empty] = plane[empty]
    return out


def render_overview(volume: Volume, labels: LabelVolume | None,
                    result: AnalysisResult, disclaimer: str
                    ) -> tuple[NDArray[np.uint8], tuple[float, float]]:
    """Sagittal overview as RGB uint8 and its pixel spacing (row, column) in mm.

    Rows run head (top) to feet, columns anterior (left) to posterior, as a radiologist views
    a sagittal image. Works on axial stacks ([k, j, i] with k along the patient axis).
    """
    geo = volume.geometry
    nk, nj, ni = volume.array.shape
    si, sj, sk = geo.spacing
    centroids = [geo.lps_to_index(v.centroid_mm) for v in result.vertebrae]
    i_mid = round(float(np.median([c[0] for c in centroids]))) if centroids else ni // 2
    j_mid = float(np.median([c[1] for c in centroids])) if centroids else nj / 2
    i_mid = min(max(i_mid, 0), ni - 1)
    j0 = max(int(j_mid - CROP_MM / sj), 0)
    j1 = min(int(j_mid + CROP_MM / sj) + 1, nj)
    gray = _window(volume.array[:, j0:j1, i_mid])  # (k, j)
    rgb = np.repeat(gray[..., None], 3, axis=2).astype(np.float32)
    texts: list[tuple[int, str, tuple[int, int, int]]] = []
    if labels is not None:
        flat = _nearest_label_projection(labels.array[:, j0:j1, :], i_mid,
                                         max(round(SLAB_MM / si), 0))
        rows_of = {v.level: float(geo.lps_to_index(v.centroid_mm)[2])
                   for v in result.vertebrae}
        for level, value in labels.levels.items():
            mask2d = flat == value
            if not mask2d.any():
                continue
            tint = np.asarray(level_rgb(level), dtype=np.float32)
            rgb[mask2d] = 0.55 * rgb[mask2d] + 0.45 * tint
            row = rows_of.get(level, float(np.flatnonzero(mask2d.any(axis=1)).mean()))
            texts.append((round(row), _label_text(result, level, labels), level_rgb(level)))
    # head at the top: flip when k runs feet -> head
    flip = float(geo.matrix[2, 2]) > 0
    if flip:
        rgb = rgb[::-1]
        texts = [(nk - 1 - r, t, c) for r, t, c in texts]
    # anterior on the left: j runs anterior -> posterior when the j axis points to +y (LPS P)
    if float(geo.matrix[1, 1]) < 0:
        rgb = rgb[:, ::-1]
    width_mm, height_mm = (j1 - j0) * sj, nk * sk
    scale = max(MIN_WIDTH_PX / (j1 - j0), 1.0)
    image_w = round((j1 - j0) * scale)
    image_h = max(round(height_mm / width_mm * image_w), 16)
    img = Image.fromarray(rgb.astype(np.uint8), "RGB").resize((image_w, image_h),
                                                               Image.Resampling.BILINEAR)
    label_w = 260
    caveat = level_caveat(result)
    footer = 0 if caveat is None else CAVEAT_PX
    canvas = Image.new("RGB", (image_w + label_w, image_h + BANNER_PX + footer), (0, 0, 0))
    canvas.paste(img, (0, BANNER_PX))
    draw = ImageDraw.Draw(canvas)
    font = _font(16)
    row_px = image_h / nk
    last_y = -100
    for row, text, colour in sorted(texts):
        y = int(BANNER_PX + (row + 0.5) * row_px) - 8
        y = max(y, last_y + 18)
        last_y = y
        draw.line([(image_w - 4, y + 8), (image_w + 8, y + 8)], fill=colour, width=2)
        draw.text((image_w + 12, y), text, fill=colour, font=font)
    draw.rectangle([(0, 0), (canvas.width, BANNER_PX - 1)], fill=(150, 20, 20))
    draw.text((6, 5), disclaimer, fill=(255, 255, 255), font=_font(14))
    if caveat is not None:
        draw.text((6, image_h + BANNER_PX + 5), caveat, fill=CAVEAT_RGB, font=_font(14))
    spacing = (height_mm / image_h, width_mm / image_w)
    return np.asarray(canvas, dtype=np.uint8), spacing
