"""The exporters' own plain sagittal overview renderer.

Used for the Secondary Capture when ``osteo_node.render.sagittal`` is not installed: a sagittal
reformat through the vertebral centroids, bone window, colour labels, level / HU / Genant grade
text and a "decision support, not a diagnosis" banner (plus the level caveat when level names
are uncertain).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFont

from osteo_node.exporters.common import label_level, level_caveat
from osteo_node.exporters.seg import level_rgb
from osteo_node.pipeline.results import AnalysisResult
from osteo_node.pipeline.types import Geometry, LabelVolume, Volume

BONE_WINDOW = (300.0, 1500.0)  # display centre / width (HU), not a clinical threshold
SLAB_MM = 6.0  # half-thickness of the label projection around the sagittal plane
CROP_MM = 70.0  # anterior-posterior half width of the overview around the spine
MIN_WIDTH_PX = 640
BANNER_PX = 28
CAVEAT_PX = 24  # footer line with the level-uncertainty caveat
CAVEAT_RGB = (255, 200, 0)
LABEL_PANEL_PX = 260

Text = tuple[int, str, tuple[int, int, int]]  # (image row, text, colour)


@dataclass(frozen=True)
class _Plane:
    """The sagittal plane i_mid and the anterior-posterior column range [j0, j1)."""

    i_mid: int
    j0: int
    j1: int


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


def _plane(volume: Volume, result: AnalysisResult) -> _Plane:
    """Sagittal plane through the median vertebral centroid, cropped around the spine."""
    geo = volume.geometry
    _nk, nj, ni = volume.array.shape
    sj = geo.spacing[1]
    centroids = [geo.lps_to_index(v.centroid_mm) for v in result.vertebrae]
    i_mid = round(float(np.median([c[0] for c in centroids]))) if centroids else ni // 2
    j_mid = float(np.median([c[1] for c in centroids])) if centroids else nj / 2
    i_mid = min(max(i_mid, 0), ni - 1)
    j0 = max(int(j_mid - CROP_MM / sj), 0)
    j1 = min(int(j_mid + CROP_MM / sj) + 1, nj)
    return _Plane(i_mid, j0, j1)


def _tint_labels(rgb: NDArray[np.float32], labels: LabelVolume, result: AnalysisResult,
                 geo: Geometry, plane: _Plane) -> list[Text]:
    """Blend the level colours into ``rgb`` (in place); the level texts at their rows."""
    texts: list[Text] = []
    flat = _nearest_label_projection(labels.array[:, plane.j0:plane.j1, :], plane.i_mid,
                                     max(round(SLAB_MM / geo.spacing[0]), 0))
    rows_of = {v.level: float(geo.lps_to_index(v.centroid_mm)[2]) for v in result.vertebrae}
    for level, value in labels.levels.items():
        mask2d = flat == value
        if not mask2d.any():
            continue
        tint = np.asarray(level_rgb(level), dtype=np.float32)
        rgb[mask2d] = 0.55 * rgb[mask2d] + 0.45 * tint
        row = rows_of.get(level, float(np.flatnonzero(mask2d.any(axis=1)).mean()))
        texts.append((round(row), _label_text(result, level, labels), level_rgb(level)))
    return texts


def _orient(rgb: NDArray[np.float32], texts: list[Text], geo: Geometry,
            nk: int) -> tuple[NDArray[np.float32], list[Text]]:
    """Head at the top, anterior on the left."""
    # head at the top: flip when k runs feet -> head
    if float(geo.matrix[2, 2]) > 0:
        rgb = rgb[::-1]
        texts = [(nk - 1 - r, t, c) for r, t, c in texts]
    # anterior on the left: j runs anterior -> posterior when the j axis points to +y (LPS P)
    if float(geo.matrix[1, 1]) < 0:
        rgb = rgb[:, ::-1]
    return rgb, texts


def _draw_texts(draw: ImageDraw.ImageDraw, texts: list[Text], image_w: int,
                row_px: float) -> None:
    """Level texts right of the image, top to bottom, at least 18 px apart."""
    font = _font(16)
    last_y = -100
    for row, text, colour in sorted(texts):
        y = int(BANNER_PX + (row + 0.5) * row_px) - 8
        y = max(y, last_y + 18)
        last_y = y
        draw.line([(image_w - 4, y + 8), (image_w + 8, y + 8)], fill=colour, width=2)
        draw.text((image_w + 12, y), text, fill=colour, font=font)


def _compose(img: Image.Image, texts: list[Text], nk: int, caveat: str | None,
             disclaimer: str) -> Image.Image:
    """Canvas: banner, the image, the level texts panel and the caveat footer."""
    image_w, image_h = img.size
    footer = 0 if caveat is None else CAVEAT_PX
    canvas = Image.new("RGB", (image_w + LABEL_PANEL_PX, image_h + BANNER_PX + footer),
                       (0, 0, 0))
    canvas.paste(img, (0, BANNER_PX))
    draw = ImageDraw.Draw(canvas)
    _draw_texts(draw, texts, image_w, image_h / nk)
    draw.rectangle([(0, 0), (canvas.width, BANNER_PX - 1)], fill=(150, 20, 20))
    draw.text((6, 5), disclaimer, fill=(255, 255, 255), font=_font(14))
    if caveat is not None:
        draw.text((6, image_h + BANNER_PX + 5), caveat, fill=CAVEAT_RGB, font=_font(14))
    return canvas


def render_overview(volume: Volume, labels: LabelVolume | None,
                    result: AnalysisResult, disclaimer: str
                    ) -> tuple[NDArray[np.uint8], tuple[float, float]]:
    """Sagittal overview as RGB uint8 and its pixel spacing (row, column) in mm.

    Rows run head (top) to feet, columns anterior (left) to posterior, as a radiologist views
    a sagittal image. Works on axial stacks ([k, j, i] with k along the patient axis).
    """
    geo = volume.geometry
    nk = volume.array.shape[0]
    sj, sk = geo.spacing[1], geo.spacing[2]
    plane = _plane(volume, result)
    j0, j1 = plane.j0, plane.j1
    gray = _window(volume.array[:, j0:j1, plane.i_mid])  # (k, j)
    rgb = np.repeat(gray[..., None], 3, axis=2).astype(np.float32)
    texts = _tint_labels(rgb, labels, result, geo, plane) if labels is not None else []
    rgb, texts = _orient(rgb, texts, geo, nk)
    width_mm, height_mm = (j1 - j0) * sj, nk * sk
    scale = max(MIN_WIDTH_PX / (j1 - j0), 1.0)
    image_w = round((j1 - j0) * scale)
    image_h = max(round(height_mm / width_mm * image_w), 16)
    img = Image.fromarray(rgb.astype(np.uint8), "RGB").resize((image_w, image_h),
                                                               Image.Resampling.BILINEAR)
    canvas = _compose(img, texts, nk, level_caveat(result), disclaimer)
    spacing = (height_mm / image_h, width_mm / image_w)
    return np.asarray(canvas, dtype=np.uint8), spacing
