"""Train the 2D sagittal MR vertebral-body segmentation network (MONAI UNet) on CPU.

Data: ../shared/data/mr/vertebral_bodies (71 real sagittal lumbar MRI volumes, 1 mm iso,
manual vertebral-body masks). Only the 'train' cases of split.json are used.

Formulation: one sagittal slice in, body probability out, at MODEL_SPACING mm pixels. Each
training sample is an oblique plane sampled from a 3D volume, which gives in one step:
in-plane rotation (lordosis/kyphosis), out-of-plane tilt (scoliosis-like bodies leaving the
plane), scaling, random crops/padding (the patch may leave the cropped volume: partial coverage,
edge of field of view) and thick-slice simulation (averaging parallel planes 2-5 mm apart, like
3-4 mm clinical sagittal slices). Intensity augmentation: contrast/brightness, gamma,
multiplicative bias field, Gaussian noise, occasional inversion (T1-like contrast).

Label caveat: the datasets label only L1-L5 (vb3) or T11-L5 (vb2), so a partly visible vertebra
above the top labelled body would be a false "background" target. Rows more than IGNORE_MARGIN mm
above the top labelled body are therefore excluded from the loss. The sacrum is never labelled
and is learnt as background (the level labelling relies on that).

Usage (repo root):
    .venv/bin/python ai_models/mr_vertebral_bodies/train.py \
        --out ai_models/mr_vertebral_bodies/runs/r1
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from monai.networks.nets import UNet

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO))
from osteo_node.pipeline.mr.preprocess import normalise_intensity  # noqa: E402

MODEL_SPACING = 1.25  # mm, in-plane pixel size the network sees
IGNORE_MARGIN = 3  # mm above the top labelled body kept as background
IGNORE = 2
NET_KW = dict(
    spatial_dims=2,
    in_channels=1,
    out_channels=1,
    channels=(16, 32, 64, 128, 256),
    strides=(2, 2, 2, 2),
    num_res_units=1,
    norm="instance",
)


def build_net() -> torch.nn.Module:
    return UNet(**NET_KW)


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Case:
    """A training volume: normalised image, target (0 bg, 1 body, 2 ignore); axes SI, AP, LR."""

    def __init__(self, data: Path, name: str) -> None:
        img = np.asarray(nib.load(data / f"{name}_image.nii.gz").dataobj)
        lab = np.asarray(nib.load(data / f"{name}_label.nii.gz").dataobj)
        self.name = name
        self.image = torch.from_numpy(normalise_intensity(img))[None, None]
        target = (lab > 0).astype(np.float32)
        rows = np.nonzero(target.any(axis=(1, 2)))[0]
        top = int(rows.min())
        target[: max(0, top - IGNORE_MARGIN)] = IGNORE
        self.target = torch.from_numpy(target)[None, None]
        self.shape = img.shape
        body = np.argwhere(lab > 0)
        self.lo = body.min(0)
        self.hi = body.max(0)
        self.center_ap = float(body[:, 1].mean())
        self.body_lr = np.nonzero((lab > 0).any(axis=(0, 1)))[0]


def rotation(a: float, b: float, g: float) -> torch.Tensor:
    """Rotation matrix in (SI, AP, LR) voxel axes: a about LR (in-plane), b about AP, g about SI."""
    ca, sa, cb, sb, cg, sg = (
        math.cos(a),
        math.sin(a),
        math.cos(b),
        math.sin(b),
        math.cos(g),
        math.sin(g),
    )
    r_lr = torch.tensor([[ca, -sa, 0], [sa, ca, 0], [0, 0, 1]], dtype=torch.float32)
    r_ap = torch.tensor([[cb, 0, -sb], [0, 1, 0], [sb, 0, cb]], dtype=torch.float32)
    r_si = torch.tensor([[1, 0, 0], [0, cg, -sg], [0, sg, cg]], dtype=torch.float32)
    return r_si @ r_ap @ r_lr


def sample_plane(
    case: Case, patch: int, rng: random.Random, augment: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """One (image, target) patch [patch, patch] sampled on an (oblique) sagittal plane."""
    s0, s1, s2 = case.shape
    on_body = rng.random() < 0.85
    lr = float(rng.choice(list(case.body_lr))) if on_body else rng.uniform(0, s2 - 1)
    si = rng.uniform(case.lo[0] - 50, case.hi[0] + 50)
    ap = case.center_ap + rng.uniform(-45, 45)
    if augment:
        rot = rotation(
            math.radians(rng.uniform(-20, 20)),
            math.radians(rng.uniform(-12, 12)),
            math.radians(rng.uniform(-8, 8)),
        )
        scale = rng.uniform(0.85, 1.2)
        aniso = rng.uniform(0.93, 1.07)
        thick = rng.choice([1, 1, 1, 2, 3, 4, 5])
    else:
        rot, scale, aniso, thick = torch.eye(3), 1.0, 1.0, 1
    step_r = MODEL_SPACING * scale * aniso
    step_c = MODEL_SPACING * scale / aniso
    u, v, n = rot[:, 0], rot[:, 1], rot[:, 2]
    t = torch.arange(patch, dtype=torch.float32) - (patch - 1) / 2
    rr, cc = torch.meshgrid(t * step_r, t * step_c, indexing="ij")
    centre = torch.tensor([si, ap, lr], dtype=torch.float32)
    base = centre + rr[..., None] * u + cc[..., None] * v  # [P, P, 3] voxel coords (SI, AP, LR)
    offsets = torch.linspace(-(thick - 1) / 2, (thick - 1) / 2, thick)
    pts = base[None] + offsets[:, None, None, None] * n  # [T, P, P, 3]
    size = torch.tensor([s0 - 1, s1 - 1, s2 - 1], dtype=torch.float32)
    norm = pts / size * 2 - 1
    grid = norm[..., [2, 1, 0]][None]  # grid_sample wants (x=W=LR, y=H=AP, z=D=SI)
    img = F.grid_sample(case.image, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    img = img[0, 0].mean(0)
    mid = grid[:, thick // 2 : thick // 2 + 1]
    tgt = F.grid_sample(case.target, mid, mode="nearest", padding_mode="zeros", align_corners=True)
    return img, tgt[0, 0, 0]


def intensity_augment(x: torch.Tensor, rng: random.Random) -> torch.Tensor:
    """Contrast/brightness, gamma, bias field, noise, occasional inversion on one [P, P] patch."""
    p = x.shape[-1]
    if rng.random() < 0.15:
        x = (1.0 - x).clamp(min=0) * (x > 0.02)  # T1-like: bright bodies, dark fluid
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, p), torch.linspace(-1, 1, p), indexing="ij")
    if rng.random() < 0.7:
        c = [rng.uniform(-0.3, 0.3) for _ in range(5)]
        field = c[0] * yy + c[1] * xx + c[2] * yy * xx + c[3] * yy**2 + c[4] * xx**2
        x = x * torch.exp(field)
    if rng.random() < 0.7:
        x = x.clamp(min=0) ** math.exp(rng.uniform(-0.45, 0.45))
    if rng.random() < 0.8:
        x = x * rng.uniform(0.7, 1.35) + rng.uniform(-0.12, 0.12)
    if rng.random() < 0.6:
        x = x + torch.randn_like(x) * rng.uniform(0.0, 0.06)
    return x.clamp(-0.5, 2.0)


def fov_cut(
    img: torch.Tensor, tgt: torch.Tensor, rng: random.Random
) -> tuple[torch.Tensor, torch.Tensor]:
    """End the field of view inside the patch (head, feet, front or back side): bodies cut by
    the edge stay labelled up to it, beyond it image and target are zero (partial coverage)."""
    p = img.shape[-1]
    cut = rng.randint(p // 8, p - p // 8)
    side = rng.choice(("top", "bottom", "top", "bottom", "front", "back"))
    img, tgt = img.clone(), tgt.clone()
    region = {
        "top": (slice(0, cut), slice(None)),
        "bottom": (slice(cut, None), slice(None)),
        "front": (slice(None), slice(0, cut // 2)),
        "back": (slice(None), slice(p - cut // 2, None)),
    }[side]
    img[region] = 0.0
    tgt[region] = 0.0
    return img, tgt


def make_batch(
    cases: list[Case], batch: int, patch: int, rng: random.Random, fov_cut_p: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for _ in range(batch):
        case = rng.choice(cases)
        img, tgt = sample_plane(case, patch, rng, augment=True)
        if fov_cut_p > 0 and rng.random() < fov_cut_p:
            img, tgt = fov_cut(img, tgt, rng)
        xs.append(intensity_augment(img, rng))
        ys.append(tgt)
    return torch.stack(xs)[:, None], torch.stack(ys)[:, None]


def masked_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    valid = (target != IGNORE).float()
    y = (target == 1).float()
    bce = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
    bce = (bce * valid).sum() / valid.sum().clamp(min=1)
    prob = torch.sigmoid(logits) * valid
    inter = (prob * y).sum()
    dice = 1 - (2 * inter + 1) / (prob.sum() + y.sum() + 1)
    return bce + dice


@torch.no_grad()
def val_dice(net: torch.nn.Module, cases: list[Case], patch: int) -> float:
    """Quick voxel Dice over validation planes (not the per-body evaluation)."""
    net.eval()
    rng = random.Random(123)
    inter = tot = 0.0
    for case in cases:
        for _ in range(24):
            img, tgt = sample_plane(case, patch, rng, augment=False)
            pred = torch.sigmoid(net(img[None, None]))[0, 0] > 0.5
            valid = tgt != IGNORE
            y = (tgt == 1) & valid
            pr = pred & valid
            inter += float((pr & y).sum())
            tot += float(pr.sum() + y.sum())
    net.train()
    return 2 * inter / max(tot, 1.0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--data", type=Path, default=REPO.parent / "shared" / "data" / "mr" / "vertebral_bodies"
    )
    ap.add_argument("--split", type=Path, default=HERE / "split.json")
    ap.add_argument("--out", type=Path, default=HERE / "runs" / "latest")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--patch", type=int, default=160)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--init", type=Path, default=None, help="start from these weights (fine-tune)")
    ap.add_argument("--fov-cut", type=float, default=0.0,
                    help="probability of ending the field of view inside a patch (r3: 0.35)")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    seed_all(args.seed)
    rng = random.Random(args.seed)
    split = json.loads(args.split.read_text())
    t0 = time.time()
    train_cases = [Case(args.data, c) for c in split["train"]]
    val_cases = [Case(args.data, c) for c in split["val"]]
    print(
        f"loaded {len(train_cases)} train / {len(val_cases)} val volumes "
        f"in {time.time() - t0:.1f}s",
        flush=True,
    )

    net = build_net()
    if args.init is not None:
        net.load_state_dict(torch.load(args.init, map_location="cpu"))
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.05
    )
    args.out.mkdir(parents=True, exist_ok=True)
    log = []
    t0 = time.time()
    running = 0.0
    for step in range(1, args.steps + 1):
        x, y = make_batch(train_cases, args.batch, args.patch, rng, args.fov_cut)
        loss = masked_loss(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        running = 0.98 * running + 0.02 * float(loss) if step > 1 else float(loss)
        if step % 50 == 0:
            print(f"step {step} loss {running:.4f} {time.time() - t0:.0f}s", flush=True)
        if step % 500 == 0 or step == args.steps:
            d = val_dice(net, val_cases, args.patch)
            log.append({"step": step, "loss": running, "val_plane_dice": d, "s": time.time() - t0})
            print(f"step {step} val plane Dice {d:.4f}", flush=True)
            torch.save(net.state_dict(), args.out / "model.pt")
            (args.out / "log.json").write_text(
                json.dumps(
                    {"args": {k: str(v) for k, v in vars(args).items()}, "log": log}, indent=1
                )
            )
    print(f"done in {time.time() - t0:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
