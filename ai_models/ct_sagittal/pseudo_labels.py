"""Pseudo-labels of the unlabelled real chest CT for training (mid-thoracic vertebrae).

No labelled CT here shows T5-T8; the complete chest series (``ct/chest_ct_series``, 141 slices,
C7-L1) does. A model (for a leave-one-case-out fold: that fold's model, trained without the
held-out case) runs the whole runtime pipeline on it; its final instance maps on the
straightened grid become targets: bodies (closed, hole-filled, between the disc planes),
posterior elements grown from them, discs where the network saw disc between two bodies. Voxels
the network was unsure of (top class probability < ``MIN_P``) and a one-voxel band around every
class boundary are IGNORE (255): the loss skips them. ``cache/chest_pseudo_<name>.png`` is the
check image to look at by eye before training on it.

    .venv/bin/python ai_models/ct_sagittal/pseudo_labels.py --model ai_models/ct_sagittal \
        --name all
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from cases import shared_data  # noqa: E402
from prepare_data import CACHE, check_image  # noqa: E402

from osteo_node.models import load_model  # noqa: E402
from osteo_node.pipeline.ct.column import WORKING_MM, track_canal  # noqa: E402
from osteo_node.pipeline.ct.column_instances import find_instances  # noqa: E402
from osteo_node.pipeline.ct.sagittal_net import column_probabilities  # noqa: E402
from osteo_node.pipeline.ct.straighten import frame_for, sample  # noqa: E402
from osteo_node.pipeline.ct.working_grid import crop_to_body, to_canonical_grid  # noqa: E402
from osteo_node.pipeline.stages.volume import load_dicom_series  # noqa: E402

CHEST = "ct/chest_ct_series/dicom"
BODY, POSTERIOR, DISC, IGNORE = 1, 2, 3, 255
MIN_P = 0.8


def pseudo_labels(model_dir: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    volume = load_dicom_series(shared_data() / CHEST).volume
    canal = track_canal(*crop_to_body(*to_canonical_grid(volume, WORKING_MM)))
    if canal is None:
        raise SystemExit("no canal found in the chest series")
    frame = frame_for(canal, volume)
    image = sample(volume, frame)
    probs = column_probabilities(load_model(model_dir), image, frame.step)
    inst = find_instances(probs, frame, image)
    if inst is None:
        raise SystemExit("no vertebra found in the chest series")
    classes = np.zeros(image.shape, dtype=np.uint8)
    classes[inst.vertebrae > 0] = POSTERIOR
    classes[inst.bodies > 0] = BODY
    net = np.argmax(probs, axis=0)
    between = np.zeros(image.shape, dtype=bool)
    z = np.arange(image.shape[0])[:, None, None]
    for run in inst.runs[1:]:  # discs between two bodies found
        if run.lower is not None and not run.lower.blind:
            between |= np.abs(z - run.lower.z0) <= 6
    classes[(net == DISC) & between & (classes == 0)] = DISC
    unsure = probs.max(axis=0) < MIN_P
    edges = np.zeros(image.shape, dtype=bool)
    for c in (BODY, POSTERIOR, DISC):
        m = classes == c
        edges |= ndimage.binary_dilation(m) & ~ndimage.binary_erosion(m)
    # the partial bodies at the ends of the scan are kept; the vertebra labels are the runs
    classes[unsure | edges] = IGNORE
    levels = np.where(inst.vertebrae > 0, inst.vertebrae, 0).astype(np.uint8)
    return image, classes, levels


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="model folder (model.json)")
    p.add_argument("--name", required=True, help="cache/chest_pseudo_<name>.npz")
    args = p.parse_args(argv)
    image, classes, levels = pseudo_labels(args.model)
    CACHE.mkdir(exist_ok=True)
    np.savez_compressed(CACHE / f"chest_pseudo_{args.name}.npz", image=image, classes=classes,
                        levels=levels)
    shown = np.where(classes == IGNORE, 0, classes)
    check_image(image, shown, CACHE / f"chest_pseudo_{args.name}.png")
    counts = np.bincount(classes.ravel(), minlength=256)
    print(f"chest pseudo-labels ({args.name}): {image.shape} body {counts[BODY]} posterior "
          f"{counts[POSTERIOR]} disc {counts[DISC]} ignored {counts[IGNORE]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
