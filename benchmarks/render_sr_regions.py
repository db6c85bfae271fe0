"""Draw what a TID 1500-aware viewer would draw from an osteo-node SR, on the source images.

No such viewer can run here (OHIF needs its npm build from the internet; Debian packages none), so
this script reads the SR back with highdicom (``osteo_node.exporters.sr.read_report``) and draws
each vertebra's trabecular ROI region (closed SCOORD polyline) on its source slice, with the
level, HU mean and SD, one tile per vertebra::

    .venv/bin/python benchmarks/render_sr_regions.py SR.dcm SERIES_DIR OUT.png

The regions are taken from the SR only (not from the analysis), so the picture shows what the SR
says.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image, ImageDraw

from osteo_node.exporters.sr.parse import read_report

WINDOW = (-250.0, 1250.0)
TILE_MM = 70.0  # field of view of each tile


def _slices(series: Path) -> dict[str, pydicom.Dataset]:
    out = {}
    for f in sorted(series.rglob("*")):
        if f.is_file():
            try:
                ds = pydicom.dcmread(f)
            except (pydicom.errors.InvalidDicomError, OSError):
                continue
            out[str(ds.SOPInstanceUID)] = ds
    return out


def _tile(ds: pydicom.Dataset, points: np.ndarray, text: str) -> Image.Image:
    hu = ds.pixel_array * float(getattr(ds, "RescaleSlope", 1)) + float(
        getattr(ds, "RescaleIntercept", 0))
    lo, hi = WINDOW
    grey = np.clip((hu - lo) / (hi - lo) * 255, 0, 255).astype(np.uint8)
    px = float(ds.PixelSpacing[1])
    half = TILE_MM / px / 2
    cx, cy = points[:, 0].mean(), points[:, 1].mean()
    box = (int(cx - half), int(cy - half), int(cx + half), int(cy + half))
    img = Image.fromarray(grey).convert("RGB").crop(box)
    scale = 4
    img = img.resize((img.width * scale, img.height * scale), Image.Resampling.LANCZOS)
    draw = ImageDraw.Draw(img)
    pts = [((x - box[0]) * scale, (y - box[1]) * scale) for x, y in points]
    draw.line(pts, fill=(0, 210, 255), width=2)
    draw.text((6, 6), text, fill=(255, 255, 0))
    return img


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    report = read_report(pydicom.dcmread(args[0]))
    slices = _slices(Path(args[1]))
    tiles = []
    for level, pv in report.vertebrae.items():
        if pv.roi_region is None or pv.roi_region[0] not in slices:
            continue
        uid, points = pv.roi_region
        mean, sd = pv.values.get("hu_mean", float("nan")), pv.values.get("hu_sd", float("nan"))
        text = f"{level} trabecular ROI (from the SR): {mean:.0f} +- {sd:.0f} HU"
        tiles.append(_tile(slices[uid], np.asarray(points, dtype=np.float64), text))
    if not tiles:
        print("no ROI region found in the SR", file=sys.stderr)
        return 1
    cols = min(4, len(tiles))
    rows = -(-len(tiles) // cols)
    w, h = tiles[0].size
    sheet = Image.new("RGB", (cols * w, rows * h))
    for n, t in enumerate(tiles):
        sheet.paste(t.resize((w, h)), ((n % cols) * w, (n // cols) * h))
    sheet.save(args[2])
    print(f"{len(tiles)} ROI regions drawn -> {args[2]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
