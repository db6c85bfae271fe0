"""Straightened training volumes and targets of the sagittal CT network (real labelled CT only).

For every labelled case of ``cases.py``: the runtime's own canal tracker and straightening
(``osteo_node.pipeline.ct.column`` / ``straighten``) give ``S[z, u, v]`` (HU at 1.5 mm); the
reference vertebra labels are resampled onto the same grid (nearest neighbour, VerSe values),
and ``reference_classes.derive_classes`` turns them into the network's classes (body,
posterior elements, disc, sacrum). Written to ``cache/<case>.npz`` (git-ignored) with a
check image ``cache/<case>.png`` (three sagittal planes with the targets) to look at by eye.

    .venv/bin/python ai_models/ct_sagittal/prepare_data.py
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from cases import CASES, LabelledCase, shared_data  # noqa: E402

from osteo_node.pipeline.ct.column import find_canal  # noqa: E402
from osteo_node.pipeline.ct.reference_classes import derive_classes  # noqa: E402
from osteo_node.pipeline.ct.references import to_verse  # noqa: E402
from osteo_node.pipeline.ct.straighten import (  # noqa: E402
    StraightFrame,
    frame_for,
    sample,
    sample_labels,
)
from osteo_node.pipeline.sitk_io import geometry_of  # noqa: E402
from osteo_node.pipeline.stages.volume import load_dicom_series, load_nifti  # noqa: E402
from osteo_node.pipeline.types import Volume  # noqa: E402

CACHE = HERE / "cache"
COLOURS = np.array([[0, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0.6, 1], [1, 0, 0]], dtype=np.float64)


def load_volume(path: Path) -> Volume:
    return (load_dicom_series(path) if path.is_dir() else load_nifti(path)).volume


def reference_levels(case: LabelledCase, root: Path, frame: StraightFrame) -> np.ndarray:
    img = sitk.ReadImage(str(root / case.vertebrae))
    raw = sitk.GetArrayFromImage(img)
    lut = np.zeros(int(raw.max()) + 1, dtype=np.uint8)
    for value in np.unique(raw):
        verse = to_verse(int(value), case.numbering)
        if value and verse:
            lut[int(value)] = verse
    return sample_labels(lut[raw], geometry_of(img), frame)


def reference_bodies(case: LabelledCase, root: Path, frame: StraightFrame) -> np.ndarray | None:
    if case.bodies is None:
        return None
    img = sitk.ReadImage(str(root / case.bodies))
    on_grid = sample_labels(sitk.GetArrayFromImage(img), geometry_of(img), frame)
    return np.isin(on_grid, case.body_values)


def check_image(s: np.ndarray, cls: np.ndarray, path: Path) -> None:
    from PIL import Image

    tiles = []
    for v in (s.shape[2] // 2 - 8, s.shape[2] // 2, s.shape[2] // 2 + 8):
        grey = np.clip((s[:, :, v] + 200.0) / 1200.0, 0, 1)
        rgb = np.stack([grey] * 3, axis=-1)
        m = cls[:, :, v] > 0
        rgb[m] = 0.55 * rgb[m] + 0.45 * COLOURS[cls[:, :, v][m]]
        tiles += [rgb[::-1], np.stack([grey] * 3, axis=-1)[::-1]]
    im = np.concatenate(tiles, axis=1)
    Image.fromarray((im * 255).astype(np.uint8)).resize(
        (im.shape[1] * 2, im.shape[0] * 2)).save(path)


def prepare(case: LabelledCase, root: Path) -> Path:
    volume = load_volume(root / case.image)
    canal = find_canal(volume)
    if canal is None:
        raise SystemExit(f"{case.name}: no spinal canal found")
    frame = frame_for(canal, volume)
    s = sample(volume, frame)
    levels = reference_levels(case, root, frame)
    cls = derive_classes(levels, frame, reference_bodies(case, root, frame))
    CACHE.mkdir(exist_ok=True)
    out = CACHE / f"{case.name}.npz"
    np.savez_compressed(out, image=s.astype(np.float32), classes=cls, levels=levels,
                        step=frame.step, z0=frame.z0)
    check_image(s, cls, CACHE / f"{case.name}.png")
    counts = np.bincount(cls.ravel(), minlength=5)
    print(f"{case.name}: {s.shape} classes {counts.tolist()} levels "
          f"{sorted(int(v) for v in np.unique(levels) if v)}")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", type=Path, default=None)
    args = p.parse_args(argv)
    root = args.data or shared_data()
    for case in CASES:
        prepare(case, root)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
