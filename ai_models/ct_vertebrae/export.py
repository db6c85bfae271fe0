"""Export the trained CT vertebra network to ONNX and write model.json.

    .venv/bin/python ai_models/ct_vertebrae/export.py [--checkpoint runs/model.pt [more.pt ...]]

Several checkpoints (fine-tuned from the same parent) are averaged weight by weight, uniformly
(a "model soup", Wortsman et al., ICML 2022): one network, the cost of one, less run-to-run
variance than any single fine-tuning run.

ONNX opset 17 (TorchScript-based exporter, ``dynamo=False``), input ``image`` ``[1, 1, k, j, i]``
float32 with dynamic spatial axes (each a multiple of 8), output ``logits`` ``[1, 5, k, j, i]``.
The script checks that ONNX Runtime (CPU) reproduces the torch output on a real-sized input
and on an odd-sized one (max abs difference printed, must be < 1e-3), then writes the sha256
into ``model.json``, which the runtime verifies at load.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from train import (
    CHANNELS,
    HU_MAX,
    HU_MIN,
    HU_SCALE,
    N_CLASSES,
    average_checkpoints,
    build_net,
)

HERE = Path(__file__).resolve().parent
OPSET = 17
SPACING_MM = 3.0
PATCH = (48, 48, 48)  # the training patch size (instance norm statistics match)
NAME = "osteo-node-ct-vertebrae"
LABELS = {0: "background", 1: "vertebral_body", 2: "posterior_elements",
          3: "intervertebral_disc", 4: "sacrum"}


def main() -> int:
    ap = argparse.ArgumentParser(description="export the CT vertebra network to ONNX")
    ap.add_argument("--checkpoint", type=Path, nargs="+", default=[HERE / "runs" / "model.pt"],
                    help="one checkpoint, or several to average uniformly (same architecture)")
    ap.add_argument("--out", type=Path, default=HERE)
    ap.add_argument("--version", default="1.0.0")
    args = ap.parse_args()
    torch.set_num_threads(2)
    state, iters = average_checkpoints(args.checkpoint)
    net = build_net()
    net.load_state_dict(state)
    net.eval()
    onnx_path = args.out / "model.onnx"
    dummy = torch.zeros((1, 1, *PATCH), dtype=torch.float32)
    torch.onnx.export(
        net, (dummy,), str(onnx_path), dynamo=False, opset_version=OPSET,
        input_names=["image"], output_names=["logits"],
        dynamic_axes={"image": {2: "k", 3: "j", 4: "i"}, "logits": {2: "k", 3: "j", 4: "i"}},
    )
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    gen = torch.Generator().manual_seed(0)
    for shape in ((1, 1, *PATCH), (1, 1, 40, 56, 72), (1, 1, 96, 64, 64)):
        x = (torch.rand(shape, generator=gen) * 1.6 - 1.0).float()
        with torch.no_grad():
            ref = net(x).numpy()
        got = sess.run(None, {"image": x.numpy()})[0]
        diff = float(np.abs(ref - got).max())
        print(f"ORT vs torch {shape}: max abs diff {diff:.2e}")
        if diff > 1e-3:
            raise SystemExit(f"ONNX output differs from torch ({diff})")
    digest = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    manifest = {
        "name": NAME,
        "version": args.version,
        "file": onnx_path.name,
        "sha256": digest,
        "opset": OPSET,
        "spacing_mm": SPACING_MM,
        "grid": "axis-aligned LPS, array [k,j,i] = [S,P,L] increasing",
        "normalisation": {"type": "hu_clip_scale", "min": HU_MIN, "max": HU_MAX,
                          "scale": HU_SCALE},
        "labels": {str(k): v for k, v in LABELS.items()},
        "patch_size": list(PATCH),
        "divisor": 8,
        "architecture": f"monai.networks.nets.UNet channels={list(CHANNELS)} strides=[2,2,2] "
                        "num_res_units=1 norm=instance",
        "out_channels": N_CLASSES,
        "trained_iters": iters if len(iters) > 1 else iters[0],
        "weight_average_of": len(iters),
    }
    (args.out / "model.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {onnx_path} ({onnx_path.stat().st_size / 1e6:.2f} MB) sha256 {digest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
