"""Train the level-agnostic CT vertebra network (MONAI UNet) on real labelled CT.

Reproducible: fixed seeds, deterministic CPU kernels, documented commands (the shipped model)::

    .venv/bin/python ai_models/ct_vertebrae/prepare_data.py
    # phase 1: strong augmentation (~45 min on 2 shared CPU cores)
    .venv/bin/python ai_models/ct_vertebrae/train.py --iters 1200 --threads 2 --out runs/p1
    # phase 2: mild augmentation, lower learning rate (~15 min)
    .venv/bin/python ai_models/ct_vertebrae/train.py --init runs/p1/model.pt --aug mild \
        --iters 500 --lr 5e-4 --seed 7 --out runs/p2
    # phase 3: fit the training volume (flips + small jitter, ~15 min)
    .venv/bin/python ai_models/ct_vertebrae/train.py --init runs/p2/model.pt --aug fit \
        --iters 600 --lr 3e-4 --seed 11 --out runs

(paths relative to ai_models/ct_vertebrae). Writes ``runs/model.pt`` (git-ignored);
``export.py`` turns it into ``model.onnx`` + ``model.json``.

Labelled CT is scarce (two real volumes with references are used for training, one is held out
for validation, see model_card.md), so the target is level-agnostic
(body / posterior elements / disc / sacrum, see prepare_data.py) on a coarse 3 mm grid, and every
patch is heavily augmented on the fly: random 3D rotation, anisotropic scaling, elastic
deformation, left-right mirroring (anatomically fine for the spine), intensity scale/shift,
simulated contrast enhancement of soft tissue, blur and noise.
"""

from __future__ import annotations

import argparse
import itertools
import math
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss
from monai.networks.nets import UNet

HERE = Path(__file__).resolve().parent
N_CLASSES = 5
HU_MIN, HU_MAX, HU_SCALE = -1000.0, 2000.0, 1000.0  # normalised = clip(HU, MIN, MAX) / SCALE
AIR_HU = -1024.0
CHANNELS = (8, 16, 32, 64)
STRIDES = (2, 2, 2)


def build_net() -> torch.nn.Module:
    return UNet(
        spatial_dims=3, in_channels=1, out_channels=N_CLASSES, channels=CHANNELS,
        strides=STRIDES, num_res_units=1, norm="instance",
    )


def average_checkpoints(paths: list[Path]) -> tuple[dict[str, torch.Tensor], list[int]]:
    """Uniform weight average of checkpoints fine-tuned from the same parent ("model soup",
    Wortsman et al., ICML 2022); one path gives that checkpoint. Returns the state dict and the
    iterations each checkpoint was trained for."""
    ckpts = [torch.load(c, map_location="cpu", weights_only=False)  # our own checkpoints
             for c in paths]
    first = ckpts[0]["state_dict"]
    state = {k: (sum(c["state_dict"][k].double() for c in ckpts) / len(ckpts)).to(first[k].dtype)
             for k in first}
    return state, [int(c.get("iters", 0)) for c in ckpts]


def normalise(hu: torch.Tensor) -> torch.Tensor:
    return hu.clamp(HU_MIN, HU_MAX) / HU_SCALE


def rotation(ax: float, ay: float, az: float) -> torch.Tensor:
    cx, sx, cy, sy, cz, sz = (math.cos(ax), math.sin(ax), math.cos(ay), math.sin(ay),
                              math.cos(az), math.sin(az))
    rx = torch.tensor([[1, 0, 0], [0, cx, -sx], [0, sx, cx]], dtype=torch.float32)
    ry = torch.tensor([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]], dtype=torch.float32)
    rz = torch.tensor([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]], dtype=torch.float32)
    return rz @ ry @ rx


STRONG = {
    "rot": 0.25, "rot_axial": 0.3, "iso": 1.25, "aniso": 0.1, "elastic_p": 0.7,
    "elastic_min": 0.5, "elastic": 2.5, "contrast_p": 0.4, "scale": 0.1, "shift": 40.0,
    "blur_p": 0.25, "noise": 35.0, "slab_p": 0.0, "remap_p": 0.0,
}
MILD = {
    "rot": 0.08, "rot_axial": 0.1, "iso": 1.07, "aniso": 0.03, "elastic_p": 0.3,
    "elastic_min": 0.3, "elastic": 1.0, "contrast_p": 0.2, "scale": 0.05, "shift": 20.0,
    "blur_p": 0.1, "noise": 20.0, "slab_p": 0.0, "remap_p": 0.0,
}
FIT = {  # last phase: fit the training volume closely (flips and small jitter only)
    "rot": 0.03, "rot_axial": 0.03, "iso": 1.02, "aniso": 0.01, "elastic_p": 0.0,
    "elastic_min": 0.0, "elastic": 0.0, "contrast_p": 0.1, "scale": 0.03, "shift": 10.0,
    "blur_p": 0.0, "noise": 10.0, "slab_p": 0.0, "remap_p": 0.0,
}
AUGMENTATIONS = {"strong": STRONG, "mild": MILD, "fit": FIT}
# --robust-aug (the 2026-11-22 experiment, not used for the shipped 1.0.0): thin-series slabs and
# random HU remapping, with these probabilities per augmentation level
ROBUST = {"strong": {"slab_p": 0.25, "remap_p": 0.3, "bone_p": 0.5, "crop_p": 0.0},
          "mild": {"slab_p": 0.15, "remap_p": 0.15, "bone_p": 0.3, "crop_p": 0.0},
          "fit": {"slab_p": 0.0, "remap_p": 0.0, "bone_p": 0.0, "crop_p": 0.0}}
CONTRAST = {"strong": {"vessel_p": 0.5, "enhance_p": 0.4},
            "mild": {"vessel_p": 0.35, "enhance_p": 0.25},
            "fit": {"vessel_p": 0.0, "enhance_p": 0.0}}
CROP_SIZES = (16, 24, 32, 40, 48)  # per-axis patch sizes of a simulated small field of view
BONE_FACTOR = (-0.45, 0.9)  # trabecular HU above 100 x (1+f): ~55 HU (TPTBox L3) to dense bone
# --contrast-aug: contrast-enhanced CT (most clinical CT): opacified vessels next to the spine
# (aorta ~150-350 HU in portal/arterial phase, a round bright structure the size of a vertebral
# body's cross-section) as hard negatives, and enhanced parenchyma/muscle (+30..+120 HU).
VESSEL_RADIUS = (2.5, 5.5)  # voxels at 3 mm: 15-33 mm diameter
VESSEL_HU = (130.0, 380.0)
ENHANCE_HU = (30.0, 120.0)


IGNORE = 255  # target value without loss (pseudo-labels the teacher was unsure of)
HU_KNOTS = (-1000.0, -200.0, 0.0, 100.0, 300.0, 1000.0, 2000.0)


def hu_remap(hu: torch.Tensor, r: random.Random) -> torch.Tensor:
    """Random monotonic piecewise-linear HU mapping (other scanners, kernels, contrast).

    Knots move by up to ~15 % of their gaps, so tissue classes keep their order but not their
    exact values: the network has to rely on shape more than on absolute HU.
    """
    knots = list(HU_KNOTS)
    moved = [knots[0]]
    for a, b in itertools.pairwise(knots[1:]):
        lo = moved[-1] + 1.0
        moved.append(max(lo, a + r.uniform(-0.15, 0.15) * (b - a)))
    moved.append(knots[-1])
    xs = torch.tensor(knots)
    ys = torch.tensor(moved)
    idx = torch.clamp(torch.bucketize(hu, xs) - 1, 0, len(knots) - 2)
    x0, x1, y0, y1 = xs[idx], xs[idx + 1], ys[idx], ys[idx + 1]
    t = ((hu - x0) / (x1 - x0)).clamp(0.0, 1.0)
    inside = (hu >= xs[0]) & (hu <= xs[-1])
    return torch.where(inside, y0 + t * (y1 - y0), hu)


class Sampler:
    """Random augmented patches from one volume (image in HU, target classes)."""

    def __init__(self, image: np.ndarray, target: np.ndarray, patch: int, rng: random.Random,
                 aug: dict[str, float] = STRONG):
        self.hu = torch.from_numpy(image.astype(np.float32))[None, None] - AIR_HU  # air -> 0
        self.target = torch.from_numpy(target.astype(np.float32))[None, None]
        self.shape = np.array(image.shape)  # (k, j, i)
        self.fg = np.argwhere((target > 0) & (target != IGNORE))
        self.patch = patch
        self.rng = rng
        self.aug = aug

    def _grid(self, size: tuple[int, int, int] | None = None) -> torch.Tensor:
        r, a = self.rng, self.aug
        pk, pj, pi = size or (self.patch,) * 3
        if r.random() < 0.8:
            centre = self.fg[r.randrange(len(self.fg))].astype(np.float64)
            centre += np.array([r.uniform(-10, 10) for _ in range(3)])
        else:
            centre = np.array([r.uniform(0, s - 1) for s in self.shape])
        # grid_sample coordinates are (x, y, z) = (i, j, k), normalised to [-1, 1]
        centre_xyz = centre[::-1].copy()
        size_xyz = self.shape[::-1].astype(np.float64).copy()
        rot = rotation(r.uniform(-a["rot"], a["rot"]), r.uniform(-a["rot"], a["rot"]),
                       r.uniform(-a["rot_axial"], a["rot_axial"]))
        iso = math.exp(r.uniform(-math.log(a["iso"]), math.log(a["iso"])))
        scale = torch.tensor([iso * r.uniform(1 - a["aniso"], 1 + a["aniso"]) for _ in range(3)])
        flip = -1.0 if r.random() < 0.5 else 1.0  # left-right mirror (i axis)
        lin = [torch.arange(q, dtype=torch.float32) - (q - 1) / 2 for q in (pk, pj, pi)]
        zz, yy, xx = torch.meshgrid(*lin, indexing="ij")
        pts = torch.stack([xx * flip, yy, zz], dim=-1)  # (pk, pj, pi, 3) voxel offsets (x, y, z)
        pts = (pts * scale) @ rot.T
        if r.random() < a["elastic_p"]:  # smooth elastic displacement, a few voxels
            g = torch.Generator().manual_seed(r.randrange(2**31))
            amp = r.uniform(a["elastic_min"], a["elastic"])
            coarse = torch.randn((1, 3, 4, 4, 4), generator=g) * amp
            disp = F.interpolate(coarse, size=(pk, pj, pi), mode="trilinear",
                                 align_corners=True)
            pts = pts + disp[0].permute(1, 2, 3, 0)
        pts = pts + torch.tensor(centre_xyz, dtype=torch.float32)
        norm = pts / torch.tensor((size_xyz - 1) / 2, dtype=torch.float32) - 1.0
        return norm[None]

    def _intensity(self, hu: torch.Tensor) -> torch.Tensor:
        r, a = self.rng, self.aug
        g = torch.Generator().manual_seed(r.randrange(2**31))
        if r.random() < a["contrast_p"]:  # simulated contrast enhancement of soft tissue
            soft = ((hu > 0) & (hu < 90)).float()
            field = torch.rand((1, 1, 6, 6, 6), generator=g)
            field = F.interpolate(field, size=hu.shape[2:], mode="trilinear", align_corners=True)
            field = (field - 0.5).clamp(min=0) * 2.0
            hu = hu + soft * field * r.uniform(50.0, 300.0)
        hu = hu * r.uniform(1 - a["scale"], 1 + a["scale"]) + r.uniform(-a["shift"], a["shift"])
        if r.random() < a["blur_p"]:
            k = 3
            sigma = r.uniform(0.4, 1.0)
            ax = torch.arange(k, dtype=torch.float32) - 1
            w = torch.exp(-(ax**2) / (2 * sigma**2))
            w = w / w.sum()
            ker = (w[:, None, None] * w[None, :, None] * w[None, None, :])[None, None]
            hu = F.conv3d(F.pad(hu, (1, 1, 1, 1, 1, 1), mode="replicate"), ker)
        if a.get("bone_p", 0.0) > 0 and r.random() < a["bone_p"]:
            # bone density varies most between patients (osteoporotic to sclerotic): scale HU
            # above 100 up to 400 by 1 + f, and shift denser (cortical) bone by the same amount
            f = r.uniform(*BONE_FACTOR)
            hu = torch.where(hu > 100.0, hu + f * (hu.clamp(max=400.0) - 100.0), hu)
        if a["remap_p"] > 0 and r.random() < a["remap_p"]:
            hu = hu_remap(hu, r)
        if r.random() < 0.6:
            hu = hu + torch.randn(hu.shape, generator=g) * r.uniform(0.0, a["noise"])
        return hu

    def _vessel(self, hu: torch.Tensor, lab: torch.Tensor) -> torch.Tensor:
        """Paint an opacified vessel (label stays background) near the vertebral body.

        A tube running roughly cranio-caudally (tilt up to ~0.3 rad), anterior or antero-lateral
        to a body voxel of the patch, replacing soft tissue only (never the spine or air).
        """
        r = self.rng
        body = torch.nonzero(lab[0, 0] == 1)
        if len(body) == 0:
            return hu
        pk, pj, pi = hu.shape[2:]
        c = body[r.randrange(len(body))].float()
        radius = r.uniform(*VESSEL_RADIUS)
        # (k, j, i) with j = posterior: anterior is -j; lateral offset either side
        c[1] -= r.uniform(radius + 3.0, radius + 10.0)
        c[2] += r.uniform(-8.0, 8.0)
        d = torch.tensor([1.0, r.uniform(-0.3, 0.3), r.uniform(-0.3, 0.3)])
        d = d / d.norm()
        kk, jj, ii = torch.meshgrid(torch.arange(pk), torch.arange(pj), torch.arange(pi),
                                    indexing="ij")
        rel = torch.stack([kk, jj, ii], dim=-1).float() - c
        along = (rel * d).sum(-1, keepdim=True)
        dist = (rel - along * d).norm(dim=-1)
        inside = (dist < radius)[None, None]
        soft = (hu > -150.0) & (hu < 150.0) & (lab == 0)
        value = r.uniform(*VESSEL_HU)
        g = torch.Generator().manual_seed(r.randrange(2**31))
        vessel = value + torch.randn(hu.shape, generator=g) * 15.0
        return torch.where(inside & soft, vessel, hu)

    def _enhance(self, hu: torch.Tensor, lab: torch.Tensor) -> torch.Tensor:
        """Enhanced parenchyma and muscle: soft tissue raised by a smooth positive field."""
        r = self.rng
        g = torch.Generator().manual_seed(r.randrange(2**31))
        field = torch.rand((1, 1, 4, 4, 4), generator=g)
        field = F.interpolate(field, size=hu.shape[2:], mode="trilinear", align_corners=True)
        lo, hi = ENHANCE_HU
        amount = lo + field * (r.uniform(lo, hi) - lo)
        soft = ((hu > -20.0) & (hu < 100.0) & (lab == 0)).float()
        return hu + soft * amount

    def _slab(self, hu: torch.Tensor, lab: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A thin series: keep 6-20 slices, edge-pad the rest (as at run time); no loss there."""
        p = hu.shape[2]
        n = min(self.rng.randint(6, 20), p)
        k0 = self.rng.randint(0, p - n)
        hu = hu.clone()
        lab = lab.clone()
        hu[:, :, :k0] = hu[:, :, k0:k0 + 1]
        hu[:, :, k0 + n:] = hu[:, :, k0 + n - 1:k0 + n]
        lab[:, :, :k0] = IGNORE
        lab[:, :, k0 + n:] = IGNORE
        return hu, lab

    def sample(self, size: tuple[int, int, int] | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """One augmented patch; ``size`` (k, j, i) smaller than the training patch imitates a
        small field of view (a tight crop), which the runtime feeds as a smaller window."""
        grid = self._grid(size)
        hu = F.grid_sample(self.hu, grid, mode="bilinear", padding_mode="zeros",
                           align_corners=True) + AIR_HU
        lab = F.grid_sample(self.target, grid, mode="nearest", padding_mode="zeros",
                            align_corners=True)
        if self.aug.get("vessel_p", 0.0) > 0:
            for _ in range(2):
                if self.rng.random() < self.aug["vessel_p"]:
                    hu = self._vessel(hu, lab)
        if self.aug.get("enhance_p", 0.0) > 0 and self.rng.random() < self.aug["enhance_p"]:
            hu = self._enhance(hu, lab)
        hu = self._intensity(hu)
        if self.aug["slab_p"] > 0 and self.rng.random() < self.aug["slab_p"]:
            hu, lab = self._slab(hu, lab)
        return normalise(hu)[0], lab[0].long()


def masked_dice_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy + soft Dice (per class, batch-pooled) over voxels whose target != IGNORE."""
    tgt = target[:, 0]
    valid = (tgt != IGNORE).float()
    ce = F.cross_entropy(logits, tgt, ignore_index=IGNORE)
    probs = torch.softmax(logits, dim=1) * valid[:, None]
    onehot = F.one_hot(torch.where(tgt == IGNORE, 0, tgt), N_CLASSES).permute(0, 4, 1, 2, 3)
    onehot = onehot.float() * valid[:, None]
    dims = (0, 2, 3, 4)
    inter = (probs * onehot).sum(dims)
    denom = probs.sum(dims) + onehot.sum(dims)
    dice = 1.0 - (2.0 * inter + 1e-4) / (denom + 1e-4)
    return ce + dice.mean()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The training command line (flags and defaults of every run so far)."""
    ap = argparse.ArgumentParser(description="train the CT vertebra network")
    ap.add_argument("--data", type=Path, nargs="+",
                    default=[HERE / "cache" / "train_example_ct.npz"],
                    help="one or more prepared volumes (prepare_data.py); sampled in turn")
    ap.add_argument("--out", type=Path, default=HERE / "runs")
    ap.add_argument("--iters", type=int, default=1200)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--patch", type=int, default=48)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=20261122)
    ap.add_argument("--init", type=Path, nargs="+", default=None,
                    help="start from this checkpoint, or the weight average of several "
                         "(fine-tuning)")
    ap.add_argument("--aug", choices=tuple(AUGMENTATIONS), default="strong")
    ap.add_argument("--robust-aug", action="store_true",
                    help="add thin-slab and HU-remap augmentation (experiment, see model card)")
    ap.add_argument("--contrast-aug", action="store_true",
                    help="opacified vessels (hard negatives) and enhanced soft tissue")
    ap.add_argument("--crop-p", type=float, default=0.0,
                    help="probability of a batch with a small field of view (CROP_SIZES)")
    return ap.parse_args(argv)


def seed_everything(args: argparse.Namespace) -> random.Random:
    """Threads, seeds and determinism; returns the Python RNG the samplers and loop share."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    return random.Random(args.seed)


def augmentation(args: argparse.Namespace) -> dict[str, float]:
    """The augmentation settings the flags select."""
    aug = dict(AUGMENTATIONS[args.aug])
    if args.robust_aug:
        aug.update(ROBUST[args.aug])
    aug["crop_p"] = args.crop_p
    if args.contrast_aug:
        aug.update(CONTRAST[args.aug])
    return aug


def load_samplers(args: argparse.Namespace, rng: random.Random,
                  aug: dict[str, float]) -> tuple[list[Sampler], bool]:
    """One Sampler per prepared volume; True when any volume has IGNORE (pseudo-label) voxels."""
    samplers = []
    partial = False  # any pseudo-labelled volume with IGNORE voxels?
    for path in args.data:
        data = np.load(path)
        partial |= bool((data["target"] == IGNORE).any())
        samplers.append(Sampler(data["image"], data["target"], args.patch, rng, aug))
    return samplers, partial


def initial_net(args: argparse.Namespace) -> torch.nn.Module:
    """The network, from scratch or from the (averaged) --init checkpoints; prints its size."""
    net = build_net()
    if args.init is not None:
        net.load_state_dict(average_checkpoints(args.init)[0])
    n_params = sum(p.numel() for p in net.parameters())
    print(f"params {n_params}")
    return net


def loss_function(partial: bool) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Fully labelled data: MONAI's Dice+CE (what trained 1.0.0); with IGNORE voxels: masked."""
    if partial:
        return masked_dice_ce
    return DiceCELoss(
        to_onehot_y=True, softmax=True, squared_pred=False, smooth_nr=1e-4, smooth_dr=1e-4)


def next_batch(it: int, args: argparse.Namespace, samplers: Sequence[Sampler],
               aug: dict[str, float], rng: random.Random) -> tuple[torch.Tensor, torch.Tensor]:
    """Iteration ``it``'s batch: maybe a small field of view, volumes taken in turn."""
    size = None
    if aug.get("crop_p", 0.0) > 0 and rng.random() < aug["crop_p"]:
        size = tuple(rng.choice(CROP_SIZES) for _ in range(3))
    xs, ys = zip(*(samplers[(it * args.batch + b) % len(samplers)].sample(size)
                   for b in range(args.batch)), strict=True)
    return torch.stack(xs), torch.stack(ys)


def save_checkpoint(net: torch.nn.Module, it: int, args: argparse.Namespace) -> None:
    """model.pt in --out: weights, iteration and the run's flags."""
    meta = {k: str(v) for k, v in vars(args).items()}
    torch.save({"state_dict": net.state_dict(), "iters": it, "args": meta},
               args.out / "model.pt")


def train(args: argparse.Namespace, net: torch.nn.Module, samplers: Sequence[Sampler],
          aug: dict[str, float], rng: random.Random,
          loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> float:
    """AdamW + one-cycle loop; prints the smoothed loss, checkpoints every 200 iterations and
    at the end. Returns the start time."""
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.iters,
                                                pct_start=0.05)
    t0 = time.time()
    running = 0.0
    net.train()
    for it in range(1, args.iters + 1):
        x, y = next_batch(it, args, samplers, aug, rng)
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()
        sched.step()
        running = 0.95 * running + 0.05 * loss.item() if it > 1 else loss.item()
        if it % 25 == 0 or it == 1:
            print(f"it {it:5d} loss {running:.4f} lr {sched.get_last_lr()[0]:.2e} "
                  f"{time.time() - t0:7.1f}s", flush=True)
        if it % 200 == 0 or it == args.iters:
            save_checkpoint(net, it, args)
    return t0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    rng = seed_everything(args)
    args.out.mkdir(parents=True, exist_ok=True)
    aug = augmentation(args)
    samplers, partial = load_samplers(args, rng, aug)
    net = initial_net(args)
    t0 = train(args, net, samplers, aug, rng, loss_function(partial))
    print(f"done in {time.time() - t0:.0f}s")
    return 0

if __name__ == "__main__":
    raise SystemExit(main())
