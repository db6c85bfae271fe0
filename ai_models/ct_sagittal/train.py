"""Train the sagittal CT network (MONAI 2D UNet) on straightened real CT.

Input: three sagittal planes of the straightened column (``osteo_node.pipeline.ct.straighten``:
v - 3 mm, v, v + 3 mm), HU normalised as ``clip(HU, HU_MIN, HU_MAX) / HU_SCALE``; output: the
classes of ``reference_classes`` (background, body, posterior elements, disc, sacrum) on plane v.
Vertebra instances and level names are not learnt (anatomy does that at run time).

Reproducible (fixed seeds, deterministic CPU kernels)::

    .venv/bin/python ai_models/ct_sagittal/prepare_data.py
    .venv/bin/python ai_models/ct_sagittal/train.py --out runs/all            # shipped model
    .venv/bin/python ai_models/ct_sagittal/train.py --exclude s0009 --out runs/loo_s0009

``--exclude`` leaves a case out (leave-one-case-out evaluation). Every patch is augmented on the
fly, because six labelled volumes are all there is: scaling, rotation, shift off the canal,
left-right mirroring, HU scale/shift, bone density (osteoporotic to dense; with
``--low-density-p P`` also trabecular bone of the bodies 60-180 HU darker, the cortex kept:
an experiment, not in the shipped recipe, see the model card), enhanced soft
tissue, opacified vessels in front of the spine (hard negatives), thick slices (3-4.5 mm slabs
interpolated back) or blur, noise, and
synthetic compression fractures (wedge and biconcave: the body is compressed and the disc above
fills the space, as every shipped model was trained; ``--realistic-fractures``: as the fracture
evaluation deforms since 2026-12-08, see ``fracture``; crush: the column above comes down), so
that a fractured body is still segmented as one body. (The fracture *evaluation* deforms in 3D
with its own, independent code: ``osteo_node.evaluation.synthetic_fractures``.)
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss
from monai.networks.nets import UNet
from scipy.ndimage import uniform_filter1d

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from cases import CASES  # noqa: E402

N_CLASSES = 5
BODY, POSTERIOR, DISC = 1, 2, 3
IGNORE = 255
HU_MIN, HU_MAX, HU_SCALE = -1000.0, 2000.0, 1000.0
AIR_HU = -1024.0
CHANNELS = (16, 32, 64, 128)
STRIDES = (2, 2, 2)
PLANE_OFFSET = 2  # channels are planes v - 2, v, v + 2 (1.5 mm steps: +-3 mm)
PATCH = (128, 96)  # rows (z) x columns (u); u is padded from 89 to 96
STEP_MM = 1.5
CANAL_COLUMN = 84.0 / STEP_MM  # u = 0 (the canal's centre) is 84 mm behind the grid's front


def build_net() -> torch.nn.Module:
    return UNet(spatial_dims=2, in_channels=3, out_channels=N_CLASSES, channels=CHANNELS,
                strides=STRIDES, num_res_units=1, norm="batch")


@dataclass
class CaseData:
    name: str
    image: np.ndarray  # [z, u, v] HU
    classes: np.ndarray  # [z, u, v]
    levels: np.ndarray  # [z, u, v] VerSe values


def load_cases(exclude: set[str], extra: list[Path] | None = None) -> list[CaseData]:
    """The labelled cases' caches (prepare_data.py) minus ``exclude``, plus ``extra`` caches
    (pseudo_labels.py; class IGNORE marks voxels without a target)."""
    out = []
    for case in CASES:
        if case.name in exclude:
            continue
        z = np.load(HERE / "cache" / f"{case.name}.npz")
        out.append(CaseData(case.name, z["image"], z["classes"], z["levels"]))
    for path in extra or []:
        z = np.load(path)
        out.append(CaseData(path.stem, z["image"], z["classes"], z["levels"]))
    return out


class MaskedDiceCE(torch.nn.Module):
    """Dice + cross-entropy (as MONAI's DiceCELoss: softmax, one-hot targets, Dice per sample
    and class, smooth 1e-5) over the pixels whose target is not IGNORE."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        y = target[:, 0]
        valid = y != IGNORE
        y0 = torch.where(valid, y, torch.zeros_like(y))
        ce = F.cross_entropy(logits, y0, reduction="none")
        ce = (ce * valid).sum() / valid.sum().clamp(min=1)
        p = torch.softmax(logits, dim=1)
        onehot = F.one_hot(y0, N_CLASSES).permute(0, 3, 1, 2).float()
        m = valid[:, None].float()
        inter = (p * onehot * m).sum(dim=(2, 3))
        denom = ((p + onehot) * m).sum(dim=(2, 3))
        dice = 1.0 - (2.0 * inter + 1e-5) / (denom + 1e-5)
        return dice.mean() + ce


def _pad_rows(a: np.ndarray, rows: int) -> np.ndarray:
    if a.shape[0] >= rows:
        return a
    extra = rows - a.shape[0]
    before = extra // 2
    return np.pad(a, [(before, extra - before)] + [(0, 0)] * (a.ndim - 1), mode="edge")


def crop(case: CaseData, rng: random.Random) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A random patch: image [3, rows, u], classes [rows, u], levels [rows, u] (u unpadded)."""
    nz, _, nv = case.image.shape
    centre = nv // 2
    if rng.random() < 0.6:
        v = rng.randint(centre - 12, centre + 12)
    else:
        v = rng.randint(PLANE_OFFSET, nv - 1 - PLANE_OFFSET)
    planes = [max(0, v - PLANE_OFFSET), v, min(nv - 1, v + PLANE_OFFSET)]
    rows = PATCH[0] + 32  # room for scaling / rotation
    z0 = rng.randint(0, max(0, nz - rows))
    img = _pad_rows(case.image[z0:z0 + rows][:, :, planes], rows)
    cls = _pad_rows(case.classes[z0:z0 + rows, :, v], rows)
    lev = _pad_rows(case.levels[z0:z0 + rows, :, v], rows)
    if rng.random() < 0.5:  # left-right mirror: plane order reverses
        img = img[:, :, ::-1]
    return np.ascontiguousarray(img.transpose(2, 0, 1)), cls, lev


def fracture(img: np.ndarray, cls: np.ndarray, lev: np.ndarray, rng: random.Random,
             realistic: bool = False) -> None:
    """Compress one body of the patch in place (wedge, biconcave or crush, 15-55 % loss; rows
    increase cranially). Crush: everything above comes down with the body. Wedge and biconcave,
    as every shipped model was trained: the disc above, stretched, fills the space (on thin
    discs that stretches the endplates into a band of bone-bright tissue no real fracture
    shows); with ``realistic``, as the fracture evaluation deforms: a wedge's column above comes
    down with the collapsed endplate (angulating forward), a biconcave dome is filled with the
    disc's least dense row at each column (rows of the disc class only)."""
    values = [int(v) for v in np.unique(lev[cls == BODY]) if v]
    if not values:
        return
    body = (lev == rng.choice(values)) & (cls == BODY)
    rows_any = np.flatnonzero(body.any(axis=1))
    cols_any = np.flatnonzero(body.any(axis=0))
    if rows_any.size < 6 or cols_any.size < 6:
        return
    lo, hi = int(rows_any[0]), int(rows_any[-1])
    ua, up = int(cols_any[0]), int(cols_any[-1])  # anterior (small u) .. posterior
    loss = rng.uniform(0.15, 0.55)
    kind = rng.choice(("wedge", "biconcave", "crush"))
    u = np.arange(img.shape[2], dtype=np.float64)
    t = np.clip((u - ua) / max(1, up - ua), 0, 1)
    frac = {"wedge": loss * (1 - t), "biconcave": loss * (1 - (2 * t - 1) ** 2),
            "crush": np.full_like(t, loss)}[kind]
    column_follows = kind == "crush" or (realistic and kind == "wedge")
    if not column_follows:
        outside = np.maximum(ua - u, u - up).clip(min=0)
        frac = frac * np.clip(1 - outside / 5.0, 0, 1)  # taper off beyond the body
    height = hi - lo + 1
    n = img.shape[1]
    z = np.arange(n, dtype=np.float64)[:, None]
    new_top = lo + height * (1 - frac[None, :])
    inside = lo + (z - lo) / np.maximum(1e-3, 1 - frac[None, :])
    if column_follows:
        src = np.where(z <= new_top, inside, z + (hi - new_top))
        src = np.where(z < lo, z, src)
    elif realistic:
        src = np.where(z <= new_top, inside, _disc_fill(img, cls, z, frac, (lo, hi, rng)))
        src = np.where(z < lo, z, src)
    else:
        reach = hi + rng.uniform(4, 10) / STEP_MM  # the disc above
        fill = hi + (z - new_top) * (reach - hi) / np.maximum(1e-3, reach - new_top)
        src = np.where(z <= new_top, inside, fill)
        src = np.where((z < lo) | (z > reach), z, src)
    src = np.clip(src, 0, n - 1)
    for c in range(img.shape[0]):
        img[c] = _interp_rows(img[c], src)
    cls[:] = _nearest_rows(cls, src)
    lev[:] = _nearest_rows(lev, src)


def _disc_fill(img: np.ndarray, cls: np.ndarray, z: np.ndarray, frac: np.ndarray,
               body: tuple[int, int, random.Random]) -> np.ndarray:
    """Source rows above a biconcave body's sunken upper endplate: per column, the least dense
    row of the disc class between the body's middle and the disc above (a column without disc
    rows, or without loss, is left as it is)."""
    lo, hi, rng = body
    n = img.shape[1]
    reach = min(n - 1, int(hi + rng.uniform(4, 10) / STEP_MM))  # the disc above
    mid = (lo + hi) // 2  # the endplate's centre lies well inside the body's extremes
    hu = uniform_filter1d(img[img.shape[0] // 2, mid:reach + 1].astype(np.float64), 3, axis=0,
                          mode="nearest")
    disc = cls[mid:reach + 1] == DISC  # the disc's own rows (bone can be less dense)
    soft = mid + np.argmin(np.where(disc, hu, np.inf), axis=0).astype(np.float64)
    soft[~disc.any(axis=0)] = -np.inf
    w = np.clip(frac[None, :] / 0.05, 0, 1)
    return np.asarray(z + w * (np.maximum(soft[None, :], z) - z))


def _interp_rows(a: np.ndarray, src: np.ndarray) -> np.ndarray:
    i0 = np.floor(src).astype(int)
    i1 = np.minimum(i0 + 1, a.shape[0] - 1)
    w = src - i0
    cols = np.arange(a.shape[1])[None, :]
    return (a[i0, cols] * (1 - w) + a[i1, cols] * w).astype(a.dtype)


def _nearest_rows(a: np.ndarray, src: np.ndarray) -> np.ndarray:
    cols = np.arange(a.shape[1])[None, :]
    return a[np.rint(src).astype(int), cols]


def _thick_slices(x: np.ndarray, factor: int, phase: float) -> np.ndarray:
    """[c, rows, u]: rows averaged in slabs of ``factor`` (a thick-slice reconstruction,
    slab boundaries shifted by ``phase``), then linearly interpolated back on the rows."""
    from scipy.ndimage import map_coordinates

    n = x.shape[1]
    start = int(phase * factor)
    m = (n - start) // factor
    if m < 2:
        return x
    slabs = x[:, start:start + m * factor].reshape(x.shape[0], m, factor, -1).mean(axis=2)
    centres = start + (np.arange(m) + 0.5) * factor - 0.5
    src = np.interp(np.arange(n), centres, np.arange(m))
    out = np.empty_like(x)
    cols = np.arange(x.shape[2])
    rr, cc = np.meshgrid(src, cols, indexing="ij")
    for c in range(x.shape[0]):
        out[c] = map_coordinates(slabs[c], [rr, cc], order=1, mode="nearest")
    return out


def canal_contrast(x: np.ndarray, cls: np.ndarray, rng: random.Random) -> None:
    """Contrast in the spinal canal (CT myelogram, intrathecal contrast; s0009 is one): the
    canal's content, background class around the canal column of the straightened grid,
    becomes 200-900 HU, pooling towards one end. A hard negative: bright, behind the body, not
    bone of any class."""
    radius = rng.uniform(4.0, 8.0) / STEP_MM
    u = np.arange(x.shape[2])[None, :]
    m = (np.abs(u - CANAL_COLUMN) <= radius) & (cls == 0)
    ramp = np.linspace(1.0, rng.uniform(0.5, 1.5), x.shape[1])[:, None]
    hu = np.broadcast_to(rng.uniform(200, 900) * ramp, m.shape)
    x[:, m] = np.maximum(x[:, m], hu[m])


def intensity(img: np.ndarray, cls: np.ndarray, rng: random.Random,
              low_density_p: float = 0.0, canal_contrast_p: float = 0.0) -> np.ndarray:
    """HU-domain augmentation of one patch [3, rows, u]."""
    x = img.astype(np.float32)
    if canal_contrast_p > 0 and rng.random() < canal_contrast_p:
        canal_contrast(x, cls, rng)
    bone = x > 100
    x[bone] = 100 + (x[bone] - 100) * rng.uniform(0.45, 1.4)  # osteoporotic .. dense
    if low_density_p > 0 and rng.random() < low_density_p:
        # Osteoporotic trabecular bone: 0-80 HU in the bodies of the patients the screening is
        # for (TPTBox's L3 ~54 HU), which the scaling above never produces (bone > 100 HU
        # only). Trabecular voxels of the body class (below the cortex's HU) go down, the
        # cortical shell and endplates stay: a dark body with a thin bright outline.
        trabecular = (cls == BODY)[None] & (x < 350)
        x[trabecular] -= rng.uniform(60, 180)
        np.maximum(x, -60.0, out=x, where=trabecular)  # fatty marrow, not air
    if rng.random() < 0.4:  # enhanced soft tissue (contrast CT)
        soft = (x > -50) & (x < 120)
        x[soft] += rng.uniform(10, 90)
    if rng.random() < 0.35:  # opacified vessels in front of the spine: hard negatives
        for _ in range(rng.randint(1, 2)):
            r = rng.uniform(6, 14) / STEP_MM
            cu = rng.uniform(2, 30)
            hu = rng.uniform(150, 450)
            u = np.arange(x.shape[2])[None, :]
            zz = np.arange(x.shape[1])[:, None]
            zc = rng.uniform(0, x.shape[1])
            long = rng.uniform(1.0, 6.0)  # vessels run along z
            m = ((u - cu) / r) ** 2 + ((zz - zc) / (r * long)) ** 2 <= 1
            m &= cls == 0
            x[:, m] = hu + rng.uniform(-20, 20)
    x = x * rng.uniform(0.92, 1.08) + rng.uniform(-25, 25)
    if rng.random() < 0.35:  # thick slices: 3 or 4.5 mm slabs, linearly interpolated back
        x = _thick_slices(x, rng.choice((2, 3)), rng.uniform(0, 1))
    elif rng.random() < 0.5:  # or a softer reconstruction: blur along z
        from scipy.ndimage import gaussian_filter1d

        x = gaussian_filter1d(x, rng.uniform(0.5, 2.0), axis=1, mode="nearest")
    if rng.random() < 0.6:
        x += np.random.default_rng(rng.randint(0, 2**31)).normal(
            0, rng.uniform(5, 40), x.shape).astype(np.float32)
    return x


def spatial(x: torch.Tensor, y: torch.Tensor, rng: random.Random) -> tuple[torch.Tensor,
                                                                           torch.Tensor]:
    """Random scale/rotation/shift of a batch, cropped to PATCH (image bilinear, labels nearest)."""
    n = x.shape[0]
    theta = torch.zeros(n, 2, 3)
    for b in range(n):
        s = rng.uniform(0.8, 1.25)
        sz = s * rng.uniform(0.9, 1.1)
        a = np.deg2rad(rng.uniform(-10, 10))
        rows, cols = x.shape[2], x.shape[3]
        # output grid PATCH inside the input; normalised coordinates of the input
        fz, fu = PATCH[0] / rows, PATCH[1] / cols
        theta[b, 0, 0] = np.cos(a) * fu / s
        theta[b, 0, 1] = -np.sin(a) * fz / sz * rows / cols
        theta[b, 1, 0] = np.sin(a) * fu / s * cols / rows
        theta[b, 1, 1] = np.cos(a) * fz / sz
        theta[b, 0, 2] = rng.uniform(-10, 10) / STEP_MM / (cols / 2)
        theta[b, 1, 2] = rng.uniform(-0.1, 0.1)
    grid = F.affine_grid(theta, [n, 1, *PATCH], align_corners=False)
    xo = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    yo = F.grid_sample(y.float(), grid, mode="nearest", padding_mode="border",
                       align_corners=False)
    return xo, yo.long()


def next_batch(data: list[CaseData], rng: random.Random, batch: int,
               fracture_p: float, low_density_p: float = 0.0, canal_contrast_p: float = 0.0,
               realistic_fractures: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    weights = [max(60, c.image.shape[0]) for c in data]
    imgs, labs = [], []
    for _ in range(batch):
        case = rng.choices(data, weights=weights)[0]
        img, cls, lev = crop(case, rng)
        img = img.copy()
        cls = cls.copy()
        lev = lev.copy()
        if rng.random() < fracture_p:
            fracture(img, cls, lev, rng, realistic_fractures)
        x = intensity(img, cls, rng, low_density_p, canal_contrast_p)
        pad = 96 - x.shape[2]
        x = np.pad(x, [(0, 0), (0, 0), (0, pad)], mode="edge")
        cls = np.pad(cls, [(0, 0), (0, pad)], mode="edge")
        imgs.append(np.clip(x, HU_MIN, HU_MAX) / HU_SCALE)
        labs.append(cls[None])
    x = torch.from_numpy(np.stack(imgs).astype(np.float32))
    y = torch.from_numpy(np.stack(labs).astype(np.int64))
    return spatial(x, y, rng)


def train(args: argparse.Namespace) -> None:
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    rng = random.Random(args.seed)
    data = load_cases(set(args.exclude), args.extra)
    net = build_net()
    if args.init:
        net.load_state_dict(torch.load(args.init, map_location="cpu"))
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.iters,
                                                pct_start=0.1)
    loss_fn: torch.nn.Module = MaskedDiceCE() if args.extra else DiceCELoss(
        to_onehot_y=True, softmax=True, lambda_dice=1.0, lambda_ce=1.0)
    out = HERE / args.out
    out.mkdir(parents=True, exist_ok=True)
    log = []
    t0 = time.time()
    net.train()
    running = 0.0
    for it in range(1, args.iters + 1):
        x, y = next_batch(data, rng, args.batch, args.fracture_p, args.low_density_p,
                          args.canal_contrast_p, args.realistic_fractures)
        opt.zero_grad()
        loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()
        sched.step()
        running += float(loss.detach())
        if it % 50 == 0:
            log.append({"iter": it, "loss": running / 50, "s": round(time.time() - t0, 1)})
            print(f"iter {it} loss {running / 50:.4f} {time.time() - t0:.0f}s", flush=True)
            running = 0.0
    torch.save(net.state_dict(), out / "model.pt")
    (out / "train_log.json").write_text(json.dumps({
        "args": vars(args), "cases": [c.name for c in data], "log": log}, indent=1, default=str))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exclude", nargs="*", default=[], help="case names left out")
    p.add_argument("--iters", type=int, default=3000)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--fracture-p", type=float, default=0.4)
    p.add_argument("--realistic-fractures", action="store_true",
                   help="wedge and biconcave fractures as the fracture evaluation makes them "
                        "(experiment, not in any shipped recipe, see model card)")
    p.add_argument("--low-density-p", type=float, default=0.0,
                   help="share of patches with an osteoporotic body (experiment, see model card)")
    p.add_argument("--canal-contrast-p", type=float, default=0.0,
                   help="share of patches with contrast in the spinal canal (CT myelogram)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--init", type=Path, default=None, help="start from this checkpoint")
    p.add_argument("--extra", type=Path, nargs="*", default=[],
                   help="extra training caches (pseudo-labels, IGNORE-aware loss)")
    p.add_argument("--out", default="runs/all")
    train(p.parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
