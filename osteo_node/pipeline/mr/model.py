"""The MR vertebral-body ONNX model: manifest, sha256-verified loading, batched 2D inference.

The manifest ``model.json`` beside ``model.onnx`` (under ``ai_models/mr_vertebral_bodies``) names
the file, its sha256, the input pixel spacing and the size multiple the network needs. The file's
digest is checked before a session is created; a mismatch refuses to load.

Thin adapter over the CT model runtime (``osteo_node.models``): same sha256 check, same
execution-provider choice (CUDA when the installed onnxruntime has it, else CPU), same session
options. ``osteo_node.models.load_manifest`` itself is CT-specific (HU normalisation, 3D patch),
so the 2D MR manifest is read here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import structlog
from numpy.typing import NDArray

from osteo_node.models.manifest import ModelError, sha256_of
from osteo_node.models.runtime import choose_providers
from osteo_node.pipeline.results import ModelInfo
from osteo_node.resources import resource_path

log = structlog.get_logger(__name__)


def default_model_dir() -> Path:
    """``ai_models/mr_vertebral_bodies`` (source tree, installed data, $OSTEO_MR_MODEL_DIR)."""
    return resource_path("ai_models/mr_vertebral_bodies", "OSTEO_MR_MODEL_DIR")


@dataclass(frozen=True)
class Manifest:
    name: str
    version: str
    file: str
    sha256: str
    spacing_mm: float
    size_multiple: int
    threshold: float
    input_name: str
    output_name: str

    @classmethod
    def read(cls, path: Path) -> Manifest:
        try:
            d: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
            spacing = d["input"]["spacing_mm"]
            if float(spacing[0]) != float(spacing[1]):
                raise ModelError(f"{path}: anisotropic input spacing {spacing} not supported")
            return cls(
                name=str(d["name"]),
                version=str(d["version"]),
                file=str(d["file"]),
                sha256=str(d["sha256"]).lower(),
                spacing_mm=float(spacing[0]),
                size_multiple=int(d["input"]["size_multiple"]),
                threshold=float(d.get("threshold", 0.5)),
                input_name=str(d["input"]["name"]),
                output_name=str(d["output"]["name"]),
            )
        except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
            raise ModelError(f"cannot read model manifest {path}: {exc}") from exc


class BodyModel:
    """A loaded, verified ONNX session for sagittal slices ``[N, 1, H, W]`` -> probabilities."""

    def __init__(self, manifest: Manifest, session: Any) -> None:
        self.manifest = manifest
        self._session = session
        self.provider: str = str(session.get_providers()[0])

    @property
    def info(self) -> ModelInfo:
        m = self.manifest
        return ModelInfo(
            name=m.name, version=m.version, sha256=m.sha256, execution_provider=self.provider
        )

    @classmethod
    def load(cls, model_dir: Path | None = None, threads: int = 2) -> BodyModel:
        import onnxruntime as ort

        model_dir = model_dir or default_model_dir()
        manifest = Manifest.read(model_dir / "model.json")
        onnx_path = model_dir / manifest.file
        if not onnx_path.is_file():
            raise ModelError(f"model file {onnx_path} not found")
        digest = sha256_of(onnx_path)
        if digest != manifest.sha256:
            raise ModelError(
                f"sha256 mismatch for {onnx_path.name}: file {digest}, manifest {manifest.sha256}"
            )
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers = choose_providers(list(ort.get_available_providers()))
        try:
            session = ort.InferenceSession(str(onnx_path), sess_options=opts, providers=providers)
        except Exception as exc:
            raise ModelError(f"ONNX Runtime cannot load {onnx_path.name}: {exc}") from exc
        model = cls(manifest, session)
        log.info(
            "mr_model_loaded", name=manifest.name, version=manifest.version, provider=model.provider
        )
        return model

    def predict(self, batch: NDArray[np.float32]) -> NDArray[np.float32]:
        """Probabilities ``[N, H, W]`` for normalised slices ``[N, H, W]`` (sides multiples)."""
        x = np.ascontiguousarray(batch[:, None], dtype=np.float32)
        out = self._session.run([self.manifest.output_name], {self.manifest.input_name: x})[0]
        return np.asarray(out[:, 0], dtype=np.float32)
