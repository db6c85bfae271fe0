"""Export the sagittal CT network to ONNX and write its model.json.

    .venv/bin/python ai_models/ct_sagittal/export.py --checkpoint runs/all/model.pt \
        --out ai_models/ct_sagittal --version 2.0.0

ONNX opset 17 (TorchScript-based exporter), input ``image`` ``[n, 3, rows, columns]`` float32
(dynamic; rows and columns multiples of 8), output ``logits`` ``[n, 5, rows, columns]``. Batch
norm is folded by ONNX Runtime, so the network gives the same answer on a whole column as on a
training patch. The script checks ONNX Runtime (CPU) against torch on three shapes (max abs
difference < 1e-3), then writes the sha256 into ``model.json``; the runtime refuses a file whose
hash differs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from train import (  # noqa: E402
    CHANNELS,
    HU_MAX,
    HU_MIN,
    HU_SCALE,
    N_CLASSES,
    PATCH,
    PLANE_OFFSET,
    STEP_MM,
    STRIDES,
    build_net,
)

OPSET = 17
NAME = "osteo-node-ct-sagittal"
LABELS = {0: "background", 1: "vertebral_body", 2: "posterior_elements",
          3: "intervertebral_disc", 4: "sacrum"}


def export(checkpoint: Path, out: Path, version: str, extra: dict[str, object]) -> str:
    torch.set_num_threads(2)
    net = build_net()
    net.load_state_dict(torch.load(checkpoint, map_location="cpu"))
    net.eval()
    out.mkdir(parents=True, exist_ok=True)
    onnx_path = out / "model.onnx"
    dummy = torch.zeros((1, 3, *PATCH), dtype=torch.float32)
    axes = {0: "n", 2: "rows", 3: "columns"}
    torch.onnx.export(net, (dummy,), str(onnx_path), dynamo=False, opset_version=OPSET,
                      input_names=["image"], output_names=["logits"],
                      dynamic_axes={"image": axes, "logits": axes})
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    gen = torch.Generator().manual_seed(0)
    for shape in ((2, 3, *PATCH), (1, 3, 40, 96), (3, 3, 256, 96)):
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
        "version": version,
        "file": onnx_path.name,
        "sha256": digest,
        "opset": OPSET,
        "spacing_mm": STEP_MM,
        "grid": "straightened column (osteo_node.pipeline.ct.straighten): sagittal planes, "
                "rows = z (+S), columns = u (+P) from -84 mm, padded to a multiple of 8",
        "planes_mm": [-PLANE_OFFSET * STEP_MM, 0.0, PLANE_OFFSET * STEP_MM],
        "normalisation": {"type": "hu_clip_scale", "min": HU_MIN, "max": HU_MAX,
                          "scale": HU_SCALE},
        "labels": {str(k): v for k, v in LABELS.items()},
        "patch_size": list(PATCH),
        "divisor": 8,
        "architecture": f"monai.networks.nets.UNet spatial_dims=2 in_channels=3 "
                        f"channels={list(CHANNELS)} strides={list(STRIDES)} num_res_units=1 "
                        "norm=batch",
        "out_channels": N_CLASSES,
        **extra,
    }
    (out / "model.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {onnx_path} ({onnx_path.stat().st_size / 1e6:.2f} MB) sha256 {digest}")
    return digest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=HERE)
    ap.add_argument("--version", default="2.0.0")
    args = ap.parse_args(argv)
    log = args.checkpoint.parent / "train_log.json"
    extra: dict[str, object] = {}
    if log.is_file():
        info = json.loads(log.read_text())
        extra = {"trained_on": info["cases"], "trained_iters": info["args"]["iters"],
                 "seed": info["args"]["seed"]}
        if info["args"].get("init"):
            extra["fine_tuned_from"] = Path(info["args"]["init"]).parent.name
    export(args.checkpoint, args.out, args.version, extra)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
