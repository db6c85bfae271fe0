"""Mid-sagittal overlay of a CT analysis: reformat through the spine with labels, HU and grades.

:func:`render_sagittal_overlay` is a pure function (volume, labels, result) -> RGB uint8 array;
the CLI writes it as PNG and the exporters wrap it in a DICOM Secondary Capture. The reformat
follows the spine: for every feet-head row the left-right position is interpolated between the
vertebra centroids (a curved mid-sagittal plane) and a thin left-right slab is averaged.
Every image carries the "DECISION SUPPORT - NOT A DIAGNOSIS" banner, a scale bar and the display
window. Where the numbers come from is drawn: the outline of each trabecular ROI projected on
the sagittal plane (cyan) and the three height lines (yellow). Level names the analysis
could not anchor to a landmark are drawn as "L1?" with a caveat line in the footer.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFont

from osteo_node.exporters.common import density_level, label_level, level_caveat
from osteo_node.pipeline.results import LEVELS, AnalysisResult, level_index
from osteo_node.pipeline.types import LabelVolume, Volume
from osteo_node.render.reformat import (
    canonical,
    canonical_index,
    label_points,
    midline,
    midline_plane,
    slab_plane,
)

BANNER = "DECISION SUPPORT - NOT A DIAGNOSIS"
WINDOW = (-250.0, 1250.0)  # HU shown from black to white (bone and soft tissue)
SLAB_MM = 3.0  # left-right half width averaged around the curved mid-plane
PANEL_PX = 300
CROP_ANTERIOR_MM = 110.0  # shown in front of the vertebral bodies (aorta, context)
CROP_POSTERIOR_MM = 60.0  # shown behind the posterior elements
PALETTE = [
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
    (0, 128, 128), (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0),
    (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128),
]
GRADE_COLOURS = {0: (120, 220, 120), 1: (255, 220, 80), 2: (255, 150, 40), 3: (255, 60, 60)}
# notes (measure.py, ct/analyser.py) of a body cut by the field of view: drawn "partial"
PARTIAL_NOTES = ("edge of the scanned volume", "cut by the field of view")
CAVEAT_COLOUR = (255, 200, 0)  # amber: the level-uncertainty caveat in the footer
SCALE_COLOUR = (255, 255, 255)
SCALE_BAR_MM = (50.0, 20.0, 10.0)
SCALE_MARGIN_PX = 12  # the scale bar's left end and its distance from the image's bottom
ROI_COLOUR = (0, 210, 255)  # the trabecular ROI outline (where the HU come from)
HEIGHT_COLOUR = (255, 255, 0)  # the height lines (where the heights were measured)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def _wrap(text: str, width_px: int,
          font: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> list[str]:
    """Words of ``text`` in lines no wider than ``width_px`` (a single long word stays whole)."""
    lines: list[str] = []
    for word in text.split():
        if lines and font.getlength(f"{lines[-1]} {word}") <= width_px:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


def _summary(result: AnalysisResult) -> str:
    f = result.findings
    if result.status != "analysed" or f is None:
        return f"NOT ANALYSABLE: {result.reason or ''}"[:120]
    parts = []
    if f.l1_hu is not None:
        parts.append(f"{density_level(f)} {f.l1_hu:.0f} HU ({result.contrast_phase}): "
                     f"{(f.density_category or '').replace('_', ' ')}")
    else:
        parts.append("density: not assessable")
    if f.graded_levels is not None and not f.graded_levels:
        parts.append("fractures: not assessed (no vertebra could be graded)")
        return "   ".join(parts)
    grade = f.max_genant_grade if f.max_genant_grade is not None else "-"
    parts.append(f"max Genant grade {grade}")
    shown = {v.level: label_level(v.level, result, None) for v in result.vertebrae}
    parts.append("VCF: " + (", ".join(shown.get(lv, lv) for lv in f.vcf_levels)
                            if f.vcf_levels else "none"))
    if f.graded_levels is not None and len(f.graded_levels) < len(result.vertebrae):
        parts.append(f"({len(f.graded_levels)} of {len(result.vertebrae)} vertebrae graded)")
    return "   ".join(parts)


def _tint_labels(rgb: NDArray[np.float32], lab_plane: NDArray[Any],
                 value_to_level: dict[int, str]) -> None:
    """Blend each label's palette colour into ``rgb`` (in place) where it is on the plane."""
    for value in np.unique(lab_plane[lab_plane > 0]):
        level = value_to_level.get(int(value))
        colour = np.asarray(
            PALETTE[(level_index(level) if level in LEVELS else int(value)) % len(PALETTE)],
            dtype=np.float32,
        )
        sel = lab_plane == value
        rgb[sel] = 0.6 * rgb[sel] + 0.4 * colour


def _crop_to_spine(rgb: NDArray[np.float32], points: list[tuple[int, NDArray[np.int64]]],
                   s_ap: float) -> tuple[NDArray[np.float32], int]:
    """Crop anterior-posterior to the spine with context (aorta in front); the first column."""
    if not points:
        return rgb, 0
    n_ap = rgb.shape[1]
    ap_lo = min(int(idx[:, 1].min()) for _, idx in points)
    ap_hi = max(int(idx[:, 1].max()) for _, idx in points)
    ap0 = max(0, ap_lo - int(CROP_ANTERIOR_MM / s_ap))
    ap1 = min(n_ap, ap_hi + int(CROP_POSTERIOR_MM / s_ap) + 1)
    return rgb[:, ap0:ap1], ap0


def _square_pixels(rgb: NDArray[np.float32], s_si: float, s_ap: float) -> Image.Image:
    """Resample to square pixels of the finer in-plane spacing, ~700 px tall, <= 1000 wide."""
    n_si, n_ap = rgb.shape[:2]
    px = min(s_si, s_ap)
    h_px, w_px = n_si * s_si / px, n_ap * s_ap / px
    scale = min(max(1.0, 700.0 / h_px), max(1.0, 1000.0 / w_px))
    out_h = round(n_si * s_si / px * scale)
    out_w = round(n_ap * s_ap / px * scale)
    return Image.fromarray(rgb.astype(np.uint8)).resize((out_w, out_h),
                                                        Image.Resampling.LANCZOS)


def scale_bar_mm(width_mm: float) -> float:
    """The longest of 50, 20, 10 mm that takes at most a third of the image width."""
    return next((mm for mm in SCALE_BAR_MM if mm <= width_mm / 3.0), SCALE_BAR_MM[-1])


def _draw_scale(draw: ImageDraw.ImageDraw, origin: tuple[int, int], mm_per_px: float,
                width_px: int) -> None:
    """A scale bar with 10 mm ticks at the image's lower left (``origin``: its left end) and
    the display window next to it."""
    x0, y = origin
    mm = scale_bar_mm(width_px * mm_per_px)
    length = round(mm / mm_per_px)
    draw.line([(x0, y), (x0 + length, y)], fill=SCALE_COLOUR, width=3)
    for t in range(0, int(mm) + 1, 10):
        x = x0 + round(t / mm_per_px)
        draw.line([(x, y - 6), (x, y)], fill=SCALE_COLOUR, width=1)
    draw.text((x0, y - 22), f"{mm:.0f} mm", fill=SCALE_COLOUR, font=_font(13))
    lo, hi = WINDOW
    draw.text((x0 + length + 12, y - 14), f"window W {hi - lo:.0f} / L {(hi + lo) / 2:.0f} HU",
              fill=SCALE_COLOUR, font=_font(13))
    draw.text((x0 + length + 12, y - 30), "HU region", fill=ROI_COLOUR, font=_font(13))
    draw.text((x0 + length + 90, y - 30), "heights", fill=HEIGHT_COLOUR, font=_font(13))


def _frame(base: Image.Image, result: AnalysisResult, caveat: str | None
           ) -> tuple[Image.Image, ImageDraw.ImageDraw, int]:
    """Canvas with the image, the banner, the summary footer and the wrapped caveat; the
    drawing context and the banner height."""
    out_w, out_h = base.size
    caveat_lines = _wrap(caveat, out_w + PANEL_PX - 16, _font(14)) if caveat else []
    banner_h, footer_h = 34, 30 + 22 * len(caveat_lines)
    canvas = Image.new("RGB", (out_w + PANEL_PX, out_h + banner_h + footer_h), (0, 0, 0))
    canvas.paste(base, (0, banner_h))
    draw = ImageDraw.Draw(canvas)
    draw.rectangle([0, 0, canvas.width, banner_h - 1], fill=(200, 0, 0))
    draw.text((8, 7), BANNER, fill=(255, 255, 255), font=_font(20))
    draw.text((8, out_h + banner_h + 7), _summary(result), fill=(255, 255, 255), font=_font(14))
    for n, line in enumerate(caveat_lines):
        draw.text((8, out_h + banner_h + 29 + 22 * n), line, fill=CAVEAT_COLOUR, font=_font(14))
    return canvas, draw, banner_h


def render_sagittal_overlay(
    volume: Volume, labels: LabelVolume | None, result: AnalysisResult
) -> NDArray[np.uint8]:
    """Curved mid-sagittal reformat with colour labels, level names, HU and grades burned in."""
    m = volume.geometry.matrix
    img_c, (s_si, s_ap, s_lr) = canonical(volume.array, m, volume.geometry.spacing)
    lab_c = None
    if labels is not None and labels.array.shape == volume.array.shape:
        lab_c, _ = canonical(labels.array, m, volume.geometry.spacing)
    n_si, n_ap, n_lr = img_c.shape
    mid = midline(lab_c, n_si, n_lr)
    plane = slab_plane(img_c, mid, max(0, int(SLAB_MM / s_lr)))
    lo, hi = WINDOW
    grey = np.clip((plane - lo) / (hi - lo) * 255.0, 0, 255).astype(np.uint8)
    rgb = np.repeat(grey[:, :, None], 3, axis=2).astype(np.float32)
    value_to_level = {v: k for k, v in (labels.levels.items() if labels else [])}
    if lab_c is not None:
        _tint_labels(rgb, midline_plane(lab_c, mid), value_to_level)
    points = label_points(lab_c) if lab_c is not None else []
    rgb, ap0 = _crop_to_spine(rgb, points, s_ap)
    n_ap = rgb.shape[1]
    base = _square_pixels(rgb, s_si, s_ap)
    out_w, out_h = base.size
    names = ({lv: label_level(lv, result, labels) for lv in value_to_level.values()}
             if lab_c is not None else {})
    drawn_unsure = [lv for lv, name in names.items() if name.endswith("?")]
    caveat = level_caveat(result, drawn_unsure) if result.status == "analysed" else None
    canvas, draw, banner_h = _frame(base, result, caveat)
    to_pixels = _pixel_mapper(volume, (banner_h, ap0), (out_h / n_si, out_w / n_ap))
    _draw_measurement_geometry(draw, result, to_pixels)
    if lab_c is not None:
        _draw_levels(draw, result, points, value_to_level, names,
                     origin=(out_w, banner_h, ap0), scale=(out_h / n_si, out_w / n_ap))
    _draw_scale(draw, (SCALE_MARGIN_PX, banner_h + out_h - SCALE_MARGIN_PX),
                n_si * s_si / out_h, out_w)
    draw.text((4, banner_h + 2), "A", fill=(255, 255, 0), font=_font(16))
    draw.text((out_w - 14, banner_h + 2), "P", fill=(255, 255, 0), font=_font(16))
    return np.asarray(canvas, dtype=np.uint8)


PixelMapper = Any  # (n, 3) LPS mm -> list of (x, y) canvas pixels


def _pixel_mapper(volume: Volume, origin: tuple[int, int], scale: tuple[float, float]
                  ) -> PixelMapper:
    """LPS points -> canvas pixels of the reformat (left-right dropped: the points are drawn
    where they project on the sagittal plane)."""
    top, ap0 = origin
    row_scale, col_scale = scale
    geo = volume.geometry

    def to_pixels(lps: Any) -> list[tuple[float, float]]:
        ijk = geo.lps_to_index(np.asarray(lps, dtype=np.float64))
        can = canonical_index(ijk[:, ::-1], geo.matrix, volume.array.shape)
        return [((ap - ap0 + 0.5) * col_scale, top + (si + 0.5) * row_scale)
                for si, ap in can[:, :2]]

    return to_pixels


def _draw_measurement_geometry(draw: ImageDraw.ImageDraw, result: AnalysisResult,
                               to_pixels: PixelMapper) -> None:
    """Each vertebra's trabecular ROI (outline of its sagittal projection) and height lines."""
    for v in result.vertebrae:
        outline = v.trabecular_hu.sagittal_outline if v.trabecular_hu else None
        if outline is not None and len(outline.points_mm) >= 3:
            pts = to_pixels(outline.points_mm)
            draw.line([*pts, pts[0]], fill=ROI_COLOUR, width=1)
        for line in v.height_lines:
            draw.line(to_pixels([line.top_mm, line.bottom_mm]), fill=HEIGHT_COLOUR, width=2)


def _draw_levels(
    draw: ImageDraw.ImageDraw, result: AnalysisResult,
    points: list[tuple[int, NDArray[np.int64]]], value_to_level: dict[int, str],
    names: dict[str, str], *,
    origin: tuple[int, int, int], scale: tuple[float, float],
) -> None:
    out_w, top, ap0 = origin
    row_scale, col_scale = scale
    measured = {v.level: v for v in result.vertebrae}
    font = _font(15)
    placed: list[float] = []
    entries = []
    for value, idx in points:
        level = value_to_level.get(value)
        if level is None:
            continue
        entries.append((float(idx[:, 0].mean()), level, float(idx[:, 1].min()) - ap0))
    small = _font(13)
    for row, level, ant in sorted(entries):
        y = top + row * row_scale
        y_text = max([y, *(p + 18 for p in placed if p + 18 > y)], default=y)
        placed.append(y_text)
        v = measured.get(level)
        name = names.get(level, level)  # "L1?" when the name is uncertain
        text = name
        colour: tuple[int, int, int] = (200, 200, 200)
        if v is not None:
            hu = f"{v.trabecular_hu.mean:.0f} HU" if v.trabecular_hu else "- HU"
            grade = f"G{v.genant_grade}" if v.genant_grade is not None else "G?"
            morph = "" if v.morphology in ("normal", "indeterminate") else f" {v.morphology}"
            partial = any(p in n for n in v.notes for p in PARTIAL_NOTES)
            text = f"{name:>4}  {hu:>7}  {grade}{morph}{' partial' if partial else ''}"
            colour = GRADE_COLOURS.get(v.genant_grade, (200, 200, 200)) \
                if v.genant_grade is not None else (200, 200, 200)
        # text at whole pixels: crisp glyphs, the same pixels wherever a name is drawn
        draw.text((max(2, round(ant * col_scale) - 34), round(y) - 7), name, fill=colour,
                  font=small)
        draw.line([(out_w - 12, y), (out_w + 4, y_text)], fill=colour, width=2)
        draw.text((out_w + 8, round(y_text) - 8), text, fill=colour, font=font)
