"""``model.json``: the manifest that describes an ONNX model shipped under ``ai_models/``.

Keys (all required unless noted)::

    name, version          identity reported in results (ModelInfo)
    file                   ONNX file name next to model.json (default "model.onnx")
    sha256                 hex digest of that file; checked at load, a mismatch is refused
    spacing_mm             isotropic input spacing of the canonical grid
    normalisation          {"type": "hu_clip_scale", "min": -1000, "max": 2000, "scale": 1000}
                           -> input = clip(HU, min, max) / scale
    labels                 {"0": "background", "1": "vertebral_body", ...} output channel names
    patch_size             [k, j, i] sliding-window size used at inference (3D models), or the
                           [rows, columns] training patch of a 2D model
    divisor                (optional, default 8) spatial sizes must be multiples of it
    opset                  (optional) ONNX opset of the file
    planes_mm              (optional, 2D models on the straightened column) offsets of the
                           sagittal planes given as input channels
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class ModelError(RuntimeError):
    """A model could not be loaded (missing file, bad manifest, checksum mismatch)."""


@dataclass(frozen=True)
class Normalisation:
    hu_min: float
    hu_max: float
    scale: float


@dataclass(frozen=True)
class ModelManifest:
    name: str
    version: str
    onnx_path: Path
    sha256: str
    spacing_mm: float
    normalisation: Normalisation
    labels: dict[int, str]
    patch_size: tuple[int, ...]
    divisor: int = 8
    opset: int | None = None
    planes_mm: tuple[float, ...] = ()

    def label_value(self, name: str) -> int:
        for value, label in self.labels.items():
            if label == name:
                return value
        raise KeyError(f"model {self.name} has no output label {name!r}")


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _require(d: dict[str, Any], key: str, where: Path) -> Any:
    if key not in d:
        raise ModelError(f"{where}: manifest key {key!r} missing")
    return d[key]


def load_manifest(path: Path) -> ModelManifest:
    """Read and validate ``model.json`` (does not hash the ONNX file; see verify_checksum)."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ModelError(f"model manifest not found: {path}") from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"model manifest unreadable: {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise ModelError(f"{path}: manifest must be a JSON object")
    norm = _require(raw, "normalisation", path)
    if norm.get("type") != "hu_clip_scale":
        raise ModelError(f"{path}: unsupported normalisation {norm.get('type')!r}")
    patch = tuple(int(v) for v in _require(raw, "patch_size", path))
    if len(patch) not in (2, 3):
        raise ModelError(f"{path}: patch_size needs 2 or 3 values")
    try:
        return ModelManifest(
            name=str(_require(raw, "name", path)),
            version=str(_require(raw, "version", path)),
            onnx_path=path.parent / str(raw.get("file", "model.onnx")),
            sha256=str(_require(raw, "sha256", path)).lower(),
            spacing_mm=float(_require(raw, "spacing_mm", path)),
            normalisation=Normalisation(float(norm["min"]), float(norm["max"]),
                                        float(norm["scale"])),
            labels={int(k): str(v) for k, v in _require(raw, "labels", path).items()},
            patch_size=patch,
            divisor=int(raw.get("divisor", 8)),
            opset=int(raw["opset"]) if "opset" in raw else None,
            planes_mm=tuple(float(v) for v in raw.get("planes_mm", ())),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{path}: invalid manifest: {exc}") from exc


def verify_file(path: Path, sha256: str) -> None:
    """Refuse a model file that is missing or whose sha256 differs from its manifest's."""
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    actual = sha256_of(path)
    if actual != sha256:
        raise ModelError(
            f"sha256 mismatch for {path.name}: manifest {sha256}, "
            f"file {actual}; refusing to load a model that is not the one described"
        )


def verify_checksum(manifest: ModelManifest) -> None:
    """Refuse a model file whose sha256 differs from the manifest."""
    verify_file(manifest.onnx_path, manifest.sha256)
