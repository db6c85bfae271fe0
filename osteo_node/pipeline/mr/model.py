"""The MR vertebral-body ONNX model: manifest, sha256-verified loading, batched 2D inference.

The manifest ``model.json`` beside ``model.onnx`` (under ``ai_models/mr_vertebral_bodies``) names
the file, its sha256, the input pixel spacing and the size multiple the network needs. The file's
digest is checked before a session is created; a mismatch refuses to load.

The session is opened by the shared model runtime (``osteo_node.models.open_session``, as for
the CT model): the same sha256 check, execution-provider choice (CUDA when the installed
onnxruntime has it, else CPU), session options and logging. ``osteo_node.models.load_manifest``
itself is CT-specific (HU normalisation, 3D patch), so the 2D MR manifest (input/output names,
size multiple, threshold) is read here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from osteo_node.models.manifest import ModelError
from osteo_node.models.runtime import open_session
from osteo_node.pipeline.results import ModelInfo
from osteo_node.resources import resource_path


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

    def __init__(self, manifest: Manifest, session: Any, provider: str) -> None:
        self.manifest = manifest
        self._session = session
        self.provider = provider

    @property
    def info(self) -> ModelInfo:
        m = self.manifest
        return ModelInfo(
            name=m.name, version=m.version, sha256=m.sha256, execution_provider=self.provider
        )

    @classmethod
    def load(cls, model_dir: Path | None = None, threads: int = 2) -> BodyModel:
        model_dir = model_dir or default_model_dir()
        manifest = Manifest.read(model_dir / "model.json")
        session, provider = open_session(model_dir / manifest.file, manifest.sha256,
                                         name=manifest.name, version=manifest.version,
                                         threads=threads)
        return cls(manifest, session, provider)

    def predict(self, batch: NDArray[np.float32]) -> NDArray[np.float32]:
        """Probabilities ``[N, H, W]`` for normalised slices ``[N, H, W]`` (sides multiples)."""
        x = np.ascontiguousarray(batch[:, None], dtype=np.float32)
        out = self._session.run([self.manifest.output_name], {self.manifest.input_name: x})[0]
        return np.asarray(out[:, 0], dtype=np.float32)
