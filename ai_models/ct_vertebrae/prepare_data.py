"""Build the training targets of the CT vertebra network from the real reference labels.

Level-agnostic classes (the same for every vertebra, so a few volumes teach them):
    0 background, 1 vertebral body, 2 posterior elements (rest of the vertebra),
    3 intervertebral disc, 4 sacrum (S1 as labelled by the reference).

Source (see ../shared/data/README.md): ``ct/totalseg_example/example_ct.nii.gz`` with
``example_ct_vertebrae.nii.gz`` (per vertebra, TotalSegmentator numbering, 26 = S1) and
``vertebrae_body.nii.gz`` (1 body, 2 disc). Everything is resampled onto the model's canonical
grid (axis-aligned LPS, ``SPACING_MM`` isotropic) with the runtime's own resampling code.

Second training volume, PSEUDO-labelled (self-training): the complete real chest CT
``ct/chest_ct_series`` has no labels. The teacher (model 1.0.0, trained on example_ct alone,
kept in ``teacher_1.0.0/``) and the same instance/level logic as at run time label it; only
what the teacher is sure of is kept as a target, everything doubtful is IGNORE (value 255, no
loss).
(Model 1.1.0 is trained on example_ct + these pseudo-labels, see model_card.md.) The rules:
- vertebrae named T4..L1 (the teacher misses T1-T3): body = teacher body class inside those
  instances, posterior elements = teacher posterior class inside them, both only where the
  teacher's probability >= ``TRUST_P``;
- a band of +-1 voxel (3 mm) around every cut between two bodies is IGNORE: the teacher does not
  see thoracic discs, so the disc class is only learnt from example_ct;
- every other foreground voxel of the teacher, voxels next to foreground that the teacher is
  unsure about, a 2-voxel shell around the kept vertebrae (processes the teacher missed) and the
  spinal column above the highest trusted vertebra are IGNORE;
- everything else is background: ribs, scapulae, clavicles, sternum, humeral heads, heart and
  great vessels: real hard negatives that example_ct does not have.
The sagittal check image ``cache/chest_pseudo.png`` is for a person to look at.

Third training volume since model 1.3.0: the 20-slice contrast PET/CT slab (``build_contrast_slab``,
see the constants below). Held out on purpose (never read here): the TPTBox crop, the validation
case of the model card.
Not used: ``spinefe_verse004_L2`` (its image is masked to zero outside the vertebra and its discs
are artificial, so it teaches nothing about real context).

Usage:  .venv/bin/python ai_models/ct_vertebrae/prepare_data.py [--data ../shared/data]
Writes ``ai_models/ct_vertebrae/cache/train_example_ct.npz``, ``train_chest_pseudo.npz`` and
``train_contrast_slab.npz`` (git-ignored; derived imaging data must not be committed).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from osteo_node.pipeline.ct.seg_grid import (
    canonical_geometry,
    geometry_of,
    resample_image,
    resample_labels,
)

SPACING_MM = 3.0
HERE = Path(__file__).resolve().parent
BACKGROUND, BODY, POSTERIOR, DISC, SACRUM = 0, 1, 2, 3, 4
IGNORE = 255
TRUST_P = 0.8  # teacher probability needed to keep a pseudo-label
PSEUDO_LEVELS = ("T4", "T5", "T6", "T7", "T8", "T9", "T10", "T11", "T12", "L1")
TS_S1 = 26  # TotalSegmentator "total" numbering in example_ct_vertebrae


def build_example_ct(data: Path) -> dict[str, np.ndarray]:
    d = data / "ct" / "totalseg_example"
    ct = sitk.ReadImage(str(d / "example_ct.nii.gz"))
    vert = sitk.ReadImage(str(d / "example_ct_vertebrae.nii.gz"))
    body = sitk.ReadImage(str(d / "vertebrae_body.nii.gz"))
    arr = sitk.GetArrayFromImage(ct)
    geo, shape = canonical_geometry(geometry_of(ct), arr.shape, SPACING_MM)
    image = resample_image(ct, geo, shape, default=-1024.0)
    v = resample_labels(vert, geo, shape)
    b = resample_labels(body, geo, shape)
    target = np.zeros(shape, dtype=np.uint8)
    target[v > 0] = POSTERIOR
    target[b == 1] = BODY
    target[b == 2] = DISC
    target[v == TS_S1] = SACRUM
    return {
        "image": image.astype(np.float32),
        "target": target,
        "origin": np.asarray(geo.origin),
        "spacing": np.asarray(geo.spacing),
    }


def build_chest_pseudo(data: Path, teacher_dir: Path) -> dict[str, np.ndarray]:
    """Pseudo-labels for the unlabelled chest CT series (see the module docstring)."""
    from osteo_node.models import load_model
    from osteo_node.pipeline.ct.level_names import VERSE_VALUES
    from osteo_node.pipeline.ct.levels import label_model_grid
    from osteo_node.pipeline.stages.segment import run_model
    from osteo_node.pipeline.stages.volume import load_dicom_series

    teacher = load_model(teacher_dir)
    volume = load_dicom_series(data / "ct" / "chest_ct_series" / "dicom").volume
    mg = run_model(volume, teacher)
    grid = label_model_grid(mg)
    cls, pmax = mg.classes, mg.probs.max(axis=0)
    keep_values = [VERSE_VALUES[n] for n in PSEUDO_LEVELS if n in grid.levels]
    named = np.isin(grid.vertebrae, keep_values)
    trusted = pmax >= TRUST_P
    target = np.full(cls.shape, IGNORE, dtype=np.uint8)
    fg = cls > 0
    near_fg = ndimage.binary_dilation(fg, iterations=1)
    target[~near_fg | (near_fg & ~fg & trusted)] = BACKGROUND
    body = named & (grid.bodies > 0) & (cls == BODY) & trusted
    post = named & (cls == POSTERIOR) & trusted
    # cut bands: voxels within 1 voxel (along k) of a different body instance
    b = np.where(named, grid.bodies, 0).astype(np.int16)
    band = np.zeros(b.shape, dtype=bool)
    for dk in (1, -1):
        other = np.roll(b, dk, axis=0)
        band |= (b > 0) & (other > 0) & (other != b)
    band = ndimage.binary_dilation(band, structure=np.ones((3, 1, 1), bool))
    # around the kept vertebrae the teacher's background is not trusted (spinous process tips,
    # transverse processes it did not label)
    shell = ndimage.binary_dilation(named, iterations=2) & (target == BACKGROUND)
    target[shell] = IGNORE
    target[body] = BODY
    target[post] = POSTERIOR
    target[band & (b > 0)] = IGNORE
    # the column above the highest trusted vertebra: the teacher misses T1-T3 there
    if named.any():
        ks, js, is_ = np.nonzero(named)
        top = int(ks.max())
        j0, j1 = max(0, js.min() - 8), js.max() + 9
        i0, i1 = max(0, is_.min() - 8), is_.max() + 9
        target[top + 1:, j0:j1, i0:i1] = IGNORE
    return {
        "image": mg.hu.astype(np.float32),
        "target": target,
        "origin": np.asarray(mg.geometry.origin),
        "spacing": np.asarray(mg.geometry.spacing),
        "teacher_sha256": np.asarray(teacher.manifest.sha256),
    }


# The 20-slice contrast PET/CT slab (ct/totalseg_example/dicom, 2 mm slices, T11-T12), used for
# training since model 1.3.0. Its silver-standard reference was computed on a 3 mm grid and
# upsampled: its z boundaries are 1-2 slices off (T12 runs into the T12/L1 disc, T11 into the
# T12 body). So the body/disc extent along the column is read by a person from the native
# image (sagittal views at three positions, cache/contrast_slab_sagittal.png; dark disc bands
# between bright endplates), per native slice index (0 = most inferior). Slices on the edge of
# a disc are IGNORE. The in-plane outline comes from the reference.
SLAB_BODY_T12 = range(4, 15)   # T12 body (endplates at 3-4 and 14-15)
SLAB_BODY_T11 = range(18, 20)  # lower part of T11's body
SLAB_DISC = (1, 2, 16, 17)     # T12/L1 and T11/T12 discs
SLAB_UNSURE = (0, 3, 15)       # L1 endplate or disc; T12 endplates next to the discs
TS_SPINAL_CANAL = 79           # TotalSegmentator "spinal_cord" (covers the canal at this scale)
TS_T12, TS_T11 = 32, 33
SLAB_PAD = 16  # model-grid slices of edge padding (IGNORE) above and below the 13-slice slab


def slab_native_targets(ref: np.ndarray) -> np.ndarray:
    """Targets of the contrast slab on its native grid ([k, j, i], +j posterior)."""
    nk = ref.shape[0]
    vert = np.isin(ref, (TS_T12, TS_T11))
    canal = ref == TS_SPINAL_CANAL
    target = np.full(ref.shape, BACKGROUND, dtype=np.uint8)
    # a ring around the reference vertebrae is IGNORE (silver standard, 3 mm outline)
    ring = ndimage.binary_dilation(vert, structure=np.ones((1, 5, 5), bool)) & ~vert
    target[ring] = IGNORE
    # in-plane body footprint: reference vertebra voxels in front of the canal's anterior edge
    # (less a 2-voxel band at the posterior wall), from the slices where the reference is inside
    # the T12 body, shifted with the canal per slice (the column is tilted)
    canal_front = np.array([np.nonzero(canal[k])[0].min() if canal[k].any() else -1
                            for k in range(nk)])
    good = [k for k in SLAB_BODY_T12 if canal_front[k] >= 0]
    ref_front = int(np.median(canal_front[good]))
    footprint = np.zeros(ref.shape[1:], dtype=bool)
    js = np.arange(ref.shape[1])[:, None]
    for k in good:
        in_front = (ref[k] == TS_T12) & (js < canal_front[k])
        footprint |= np.roll(in_front, ref_front - canal_front[k], axis=0)
    footprint = ndimage.binary_opening(ndimage.binary_fill_holes(footprint), iterations=2)
    for k in range(nk):
        if canal_front[k] < 0:
            continue
        fp = np.roll(footprint, canal_front[k] - ref_front, axis=0)
        posterior = vert[k] & (js >= canal_front[k])
        target[k][posterior] = POSTERIOR
        wall = (js >= canal_front[k] - 2) & (js < canal_front[k] + 2)
        edge = fp & ~ndimage.binary_erosion(fp, iterations=2)
        if k in SLAB_BODY_T12 or k in SLAB_BODY_T11:
            target[k][fp] = BODY
        elif k in SLAB_DISC:
            target[k][fp] = DISC
        else:
            target[k][fp | (vert[k] & (js < canal_front[k]))] = IGNORE
        target[k][edge | (wall & (fp | vert[k]))] = IGNORE
        # reference vertebra voxels in front of the canal but outside the footprint (cortex,
        # osteophytes, the neighbour's endplate): not trusted either way
        target[k][vert[k] & (js < canal_front[k]) & ~fp] = IGNORE
    for k in SLAB_UNSURE:
        fp = np.roll(footprint, canal_front[k] - ref_front, axis=0)
        target[k][fp] = IGNORE
    return target


def build_contrast_slab(data: Path) -> dict[str, np.ndarray]:
    """The 20-slice contrast slab on the model grid, edge-padded along k with IGNORE targets
    (the runtime edge-pads a thin series the same way)."""
    from osteo_node.pipeline.ct.references import reference_on
    from osteo_node.pipeline.sitk_io import to_sitk
    from osteo_node.pipeline.stages.segment import crop_to_body, to_model_grid
    from osteo_node.pipeline.stages.volume import load_dicom_series

    d = data / "ct" / "totalseg_example"
    volume = load_dicom_series(d / "dicom").volume
    ref = reference_on(volume, d / "dicom_seg_reference.nii.gz")
    native = slab_native_targets(ref)
    hu, geo = crop_to_body(*to_model_grid(volume, SPACING_MM))  # as the runtime does
    target = resample_labels(to_sitk(native, volume.geometry), geo, hu.shape).astype(np.uint8)
    # outside the native slab (resampling default 0) nothing is known
    inside = resample_labels(to_sitk(np.ones_like(native), volume.geometry), geo, hu.shape)
    target[inside == 0] = IGNORE
    pad = ((SLAB_PAD, SLAB_PAD), (0, 0), (0, 0))
    return {
        "image": np.pad(hu, pad, mode="edge").astype(np.float32),
        "target": np.pad(target, pad, constant_values=IGNORE),
        "origin": np.asarray(geo.origin) - np.array([0.0, 0.0, SLAB_PAD * SPACING_MM]),
        "spacing": np.asarray(geo.spacing),
    }


def save_check_image(sample: dict[str, np.ndarray], path: Path) -> None:
    """Mid-sagittal image | pseudo-labels (red body, green posterior, blue disc, grey ignore)."""
    from PIL import Image

    image, target = sample["image"], sample["target"]
    fg = np.argwhere((target > 0) & (target != IGNORE))
    i_mid = int(np.median(fg[:, 2])) if len(fg) else image.shape[2] // 2
    grey = (np.clip((image[:, :, i_mid] + 250.0) / 1100.0, 0, 1) * 255).astype(np.uint8)
    rgb = np.stack([grey] * 3, axis=-1)
    over = rgb.copy()
    t = target[:, :, i_mid]
    colours = {BODY: (230, 40, 40), POSTERIOR: (40, 200, 40), DISC: (40, 80, 255),
               SACRUM: (230, 230, 40), IGNORE: (110, 110, 110)}
    for value, colour in colours.items():
        over[t == value] = colour
    both = np.concatenate([rgb, over], axis=1)[::-1]  # head up
    Image.fromarray(both).resize((both.shape[1] * 3, both.shape[0] * 3), Image.NEAREST).save(path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=HERE.parents[1].parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=HERE / "cache")
    ap.add_argument("--teacher", type=Path, default=HERE / "teacher_1.0.0",
                    help="model that pseudo-labels the chest CT (1.0.0, kept for reproducibility)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    sample = build_example_ct(args.data)
    np.savez_compressed(args.out / "train_example_ct.npz", **sample)
    counts = np.bincount(sample["target"].ravel(), minlength=5)
    print("example_ct", sample["image"].shape, "class voxels", counts.tolist())
    chest = build_chest_pseudo(args.data, args.teacher)
    np.savez_compressed(args.out / "train_chest_pseudo.npz", **chest)
    save_check_image(chest, args.out / "chest_pseudo.png")
    counts = np.bincount(chest["target"].ravel(), minlength=256)
    print("chest_ct_series (pseudo)", chest["image"].shape, "class voxels",
          counts[:5].tolist(), "ignored", int(counts[IGNORE]))
    slab = build_contrast_slab(args.data)
    np.savez_compressed(args.out / "train_contrast_slab.npz", **slab)
    save_check_image(slab, args.out / "contrast_slab.png")
    counts = np.bincount(slab["target"].ravel(), minlength=256)
    print("contrast slab", slab["image"].shape, "class voxels", counts[:5].tolist(),
          "ignored", int(counts[IGNORE]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
