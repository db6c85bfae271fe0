"""Export the trained MR vertebral-body UNet to ONNX and write the manifest (model.json).

The exported graph takes ``input`` [N, 1, H, W] (float32, normalised sagittal slices at
1.25 mm pixels, H and W multiples of 16; N, H, W dynamic) and returns ``probability``
[N, 1, H, W] (sigmoid of the logits, vertebral body). The export is checked: ONNX Runtime
output must equal the torch output (max abs difference printed, must be < 1e-4) on a real
validation slice and on two other input sizes.

Usage (repo root):
    .venv/bin/python ai_models/mr_vertebral_bodies/export.py \
        --weights ai_models/mr_vertebral_bodies/runs/r1/model.pt
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import onnxruntime as ort
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))
from train import MODEL_SPACING, NET_KW, build_net  # noqa: E402

from osteo_node.pipeline.mr.preprocess import (  # noqa: E402
    CLIP,
    PERCENTILES,
    SIZE_MULTIPLE,
    normalise_intensity,
    pad_to_multiple,
    resample_stack,
)

NAME = "mr_vertebral_bodies"


class WithSigmoid(torch.nn.Module):
    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(x))


def real_slices(data: Path, case: str) -> np.ndarray:
    img = np.asarray(nib.load(data / f"{case}_image.nii.gz").dataobj)
    norm = normalise_intensity(img)
    mid = img.shape[2] // 2
    stack = np.moveaxis(norm[:, :, mid - 1 : mid + 1], 2, 0)  # [2, SI, AP]
    stack = resample_stack(stack, (1.0, 1.0), MODEL_SPACING)
    padded, _ = pad_to_multiple(stack)
    return padded[:, None].astype(np.float32)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--weights", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=HERE)
    ap.add_argument("--version", default="1.0.0")
    ap.add_argument(
        "--data", type=Path, default=REPO.parent / "shared" / "data" / "mr" / "vertebral_bodies"
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    net = build_net()
    net.load_state_dict(torch.load(args.weights, map_location="cpu"))
    model = WithSigmoid(net).eval()
    onnx_path = args.out / "model.onnx"
    dummy = torch.zeros(1, 1, 160, 128)
    torch.onnx.export(
        model,
        (dummy,),
        str(onnx_path),
        input_names=["input"],
        output_names=["probability"],
        dynamic_axes={"input": {0: "n", 2: "h", 3: "w"}, "probability": {0: "n", 2: "h", 3: "w"}},
        opset_version=17,
        dynamo=False,
    )

    split = json.loads((HERE / "split.json").read_text())
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    checks = [
        real_slices(args.data, split["val"][0]),
        np.random.default_rng(0).random((3, 1, 96, 208), dtype=np.float32),
    ]
    worst = 0.0
    for x in checks:
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        got = sess.run(["probability"], {"input": x})[0]
        diff = float(np.abs(ref - got).max())
        worst = max(worst, diff)
        print(f"ORT vs torch, input {tuple(x.shape)}: max abs diff {diff:.2e}")
    if worst > 1e-4:
        print("ORT output differs from torch", file=sys.stderr)
        return 1

    digest = sha256_of(onnx_path)
    manifest = {
        "name": NAME,
        "version": args.version,
        "file": "model.onnx",
        "sha256": digest,
        "spacing_mm": MODEL_SPACING,
        "divisor": SIZE_MULTIPLE,
        "task": "binary vertebral-body segmentation of sagittal spine MRI slices (2D)",
        "framework": "MONAI UNet (torch) exported to ONNX opset 17",
        "architecture": {k: list(v) if isinstance(v, tuple) else v for k, v in NET_KW.items()},
        "input": {
            "name": "input",
            "layout": "NCHW: N sagittal slices, 1 channel, "
            "H = head->feet rows, W = anterior->posterior columns",
            "dtype": "float32",
            "spacing_mm": [MODEL_SPACING, MODEL_SPACING],
            "size_multiple": SIZE_MULTIPLE,
            "dynamic_axes": ["n", "h", "w"],
        },
        "output": {
            "name": "probability",
            "layout": "NCHW",
            "meaning": "P(vertebral body) per pixel, sigmoid applied",
        },
        "normalisation": {
            "type": "percentile_scale",
            "percentiles": list(PERCENTILES),
            "formula": "(x - p1) / (p99 - p1), clipped",
            "clip": list(CLIP),
            "code": "osteo_node.pipeline.mr.preprocess.normalise_intensity",
        },
        "labels": {"0": "background", "1": "vertebral_body"},
        "threshold": 0.5,
        "training": {
            "data": "shared/data/mr/vertebral_bodies",
            "split": "split.json",
            "script": "train.py",
        },
        "onnx_check_max_abs_diff": worst,
    }
    (args.out / "model.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {onnx_path} ({onnx_path.stat().st_size / 1e6:.2f} MB) sha256 {digest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
